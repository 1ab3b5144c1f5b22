//! The domain's vocabulary: the closed sets of values syncgate stores, logs
//! and counts (meeting status, account status and role, webhook delivery
//! outcome, calendar provider, sync kind), each with its text form written once here.

use std::fmt;

/// Declares a closed set of values with one text form each: `as_str`,
/// `parse`, `ALL` (for metrics exported at 0) and `Display`.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value for its text form, or None for any other text.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown {} \"{text}\"", stringify!($name))))
            }
        }
    };
}

text_enum! {
    /// A meeting's `status` column.
    MeetingStatus {
        Scheduled = "scheduled",
        Canceled = "canceled",
        NoShow = "no_show",
    }
}

text_enum! {
    /// Where one Calendly invitee stands: its `calendly_invitees.state` and its
    /// entry's `status` in the meeting's invitee list (`expected` only as a
    /// link: an invitee a reschedule announced, not yet delivered).
    InviteeState {
        Active = "active",
        Canceled = "canceled",
        Rescheduled = "rescheduled",
        NoShow = "no_show",
        Expected = "expected",
    }
}

text_enum! {
    /// A user's `status` column.
    AccountStatus {
        Active = "active",
        Disabled = "disabled",
    }
}

text_enum! {
    /// A user's `role` column (and a token's `role` claim).
    Role {
        Admin = "admin",
        User = "user",
    }
}

text_enum! {
    /// How one webhook delivery ended: its log line, its metric label and,
    /// for Calendly, its stored row.
    DeliveryOutcome {
        /// Applied (or, for Google, a sync was scheduled).
        Accepted = "accepted",
        /// Seen before; nothing done again.
        Duplicate = "duplicate",
        /// Verified, but no syncgate user owns it.
        Unmatched = "unmatched",
        /// An event type syncgate does not act on.
        Ignored = "ignored",
        /// Verified but malformed.
        Invalid = "invalid",
        /// Applying it failed; the sender retries.
        Failed = "failed",
        /// Refused before its signature verified.
        Rejected = "rejected",
        /// A Google notification for a channel syncgate does not hold.
        UnknownChannel = "unknown_channel",
    }
}

text_enum! {
    /// A calendar provider: the `provider` of a push channel, and which of
    /// each provider's tables a shared store operation reads.
    Provider {
        Google = "google",
        Microsoft = "microsoft",
    }
}

text_enum! {
    /// What a calendar sync pass did: an incremental page walk from the stored
    /// sync token, a full listing of the window, or the safety-net pass.
    SyncKind {
        Incremental = "incremental",
        Full = "full",
        SafetyNet = "safety_net",
    }
}

text_enum! {
    /// How a Google sync pass ended.
    SyncOutcome {
        Ok = "ok",
        Error = "error",
        NeedsReconnect = "needs_reconnect",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_reads_back_from_its_text() {
        for s in MeetingStatus::ALL {
            assert_eq!(MeetingStatus::parse(s.as_str()), Some(*s));
        }
        for o in DeliveryOutcome::ALL {
            assert_eq!(DeliveryOutcome::parse(o.as_str()), Some(*o));
        }
        for k in SyncKind::ALL {
            assert_eq!(SyncKind::parse(&k.to_string()), Some(*k));
        }
        for i in InviteeState::ALL {
            assert_eq!(serde_json::from_value::<InviteeState>(serde_json::json!(i.as_str())).unwrap(), *i);
        }
        assert!(serde_json::from_value::<InviteeState>(serde_json::json!("gone")).is_err());
        assert_eq!(MeetingStatus::parse("cancelled"), None);
    }
}
