//! What admins (and `/api/admin/health`) see about each calendar provider:
//! connected users, who needs to reconnect, how their last syncs went, when
//! the provider last notified, every channel (Google's push channels,
//! Graph's subscriptions) with its expiry, renewals and their failures, and
//! what the safety-net sync found. Never a token.
//!
//! `push_gap_suspected` flags a user whose last safety-net find is newer than
//! the provider's last notification: changes are happening that no
//! notification announced.

use serde::Serialize;
use serde_json::{json, Value};

use crate::model::Provider;
use crate::store::sync_health::{HealthRows, UserSyncStatus};
use crate::store::{timefmt, Store};

/// One provider's part of the admin health report.
pub async fn admin_health(store: &Store, provider: Provider) -> Value {
    match store.health_rows(provider).await {
        Ok(rows) => report(rows),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the {provider} health report");
            json!({"error": format!("the {provider} health report could not be read")})
        }
    }
}

/// One user's line: the stored status and what it suggests.
#[derive(Serialize)]
struct UserHealth {
    #[serde(flatten)]
    status: UserSyncStatus,
    push_gap_suspected: bool,
}

fn report(rows: HealthRows) -> Value {
    let users: Vec<UserHealth> = rows
        .users
        .into_iter()
        .map(|status| {
            let push_gap_suspected = push_gap(status.last_safety_net_changes_at.as_deref(), status.last_notification_at.as_deref());
            UserHealth { status, push_gap_suspected }
        })
        .collect();
    let now = timefmt::format(timefmt::now());
    let channels: Vec<Value> = rows
        .channels
        .into_iter()
        .map(|c| {
            let expired = c.expiration.as_deref().is_some_and(|e| e <= now.as_str());
            json!({
                "user_id": c.user_id,
                "channel_id": c.channel_id,
                "calendar_id": c.calendar_id,
                "resource_id": c.resource_id,
                "expiration": c.expiration,
                "expired": expired,
                "state": c.state,
                "webhook_url": c.webhook_url,
                "created_at": c.created_at,
            })
        })
        .collect();
    let ids = |f: &dyn Fn(&UserHealth) -> bool| -> Vec<i64> { users.iter().filter(|u| f(u)).map(|u| u.status.user_id).collect() };
    let needs_reconnect = ids(&|u| u.status.needs_reconnect);
    let renewal_failing = ids(&|u| u.status.renewal_failures > 0);
    let push_gap_suspected = ids(&|u| u.push_gap_suspected);
    json!({
        "connected_users": users.iter().filter(|u| u.status.connected).count(),
        "needs_reconnect": needs_reconnect,
        "renewal_failing": renewal_failing,
        "push_gap_suspected": push_gap_suspected,
        "expired_channels": channels.iter().filter(|c| c["expired"] == true).count(),
        "last_notification_at": rows.last_notification_at,
        "users": users,
        "channels": channels,
    })
}

/// The safety net found changes after the provider's last notification (or
/// it never notified): notifications are probably not arriving.
fn push_gap(last_safety_net_find: Option<&str>, last_notification: Option<&str>) -> bool {
    match (last_safety_net_find, last_notification) {
        (Some(found), Some(pushed)) => found > pushed,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_push_gap_is_a_safety_net_find_after_the_last_push() {
        let (early, late) = ("2026-01-01T10:00:00.000Z", "2026-01-01T11:00:00.000Z");
        assert!(super::push_gap(Some(late), Some(early)));
        assert!(super::push_gap(Some(late), None));
        assert!(!super::push_gap(Some(early), Some(late)));
        assert!(!super::push_gap(None, Some(late)));
    }
}
