//! Property tests over every parser that reads outside bytes (issue 13, item
//! 6): timestamps, the Calendly signature header and payload, Google
//! notification headers and event JSON, Microsoft Graph event JSON, realtime frames, bindings and
//! filters, list cursors, config durations and environment values, and
//! PostgREST query strings (`/rest/v1`). The
//! property is first of all "never panics" (a panic on an input path drops a
//! connection or kills the writer); where a parser accepts, its output is
//! also checked to be what the rest of the server relies on.
//!
//! Each property runs `PROPTEST_CASES` cases (default 10,000: the CI pass).
//! The long pass (see README, "Tests"): `PROPTEST_CASES=100000 cargo test
//! --test properties` runs 1,500,000 cases in total.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Value};

use syncgate::api::input::{decode_cursor, encode_cursor};
use syncgate::calendly::payload::Delivery;
use syncgate::calendly::signature::{self, CalendlySignature};
use syncgate::duration::Dur;
use syncgate::google::routes::NotificationHeaders;
use syncgate::google::sync::{to_meeting, GEvent};
use syncgate::microsoft::events::{is_meeting, to_meeting as graph_to_meeting, GraphEvent};
use syncgate::realtime::channel::Binding;
use syncgate::realtime::filter::RowFilter;
use syncgate::realtime::protocol::{decode, Vsn};
use syncgate::store::tables::ALL_TABLES;
use syncgate::store::timefmt;

/// Cases per property: `PROPTEST_CASES` (proptest's own variable), else 10,000.
fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    // No regression files in the repository: a failure prints its minimal input.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Text shaped like an RFC 3339 timestamp, with every field able to go out of range.
fn timestamp_like() -> impl Strategy<Value = String> {
    // Edges are picked often: the first and last day of the range are where
    // an offset carries an instant out of it.
    let edge = |lo: u32, hi: u32, max: u32| prop_oneof![Just(lo), Just(hi), 0..=max];
    (
        edge(0, 9999, 9999),
        edge(1, 12, 99),
        edge(1, 31, 99),
        edge(0, 23, 99),
        edge(0, 59, 99),
        edge(0, 59, 99),
        proptest::option::of(0u32..=999_999_999),
        prop_oneof![
            Just("Z".to_string()),
            (any::<bool>(), edge(0, 23, 99), edge(0, 59, 99))
                .prop_map(|(neg, h, m)| format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' }))
        ],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
        })
}

/// Arbitrary JSON, a few levels deep, with the kinds of values parsers meet.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        ".{0,40}".prop_map(Value::from),
        timestamp_like().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn timestamps_never_panic_and_accepted_ones_are_canonical(s in prop_oneof![timestamp_like(), ".{0,40}"]) {
        match timefmt::parse_checked(&s) {
            Ok(t) => {
                let stored = timefmt::format(t);
                // Fixed width, UTC, and a fixed point of normalization (so text order is time order).
                prop_assert_eq!(stored.len(), 24, "{}", stored);
                prop_assert!(stored.ends_with('Z'));
                prop_assert_eq!(timefmt::normalize(&stored), Some(stored.clone()));
            }
            Err(_) => prop_assert!(timefmt::normalize(&s).is_none()),
        }
        let _ = timefmt::parse_date(&s);
    }

    #[test]
    fn stored_timestamps_sort_as_time(a in timestamp_like(), b in timestamp_like()) {
        if let (Ok(ta), Ok(tb)) = (timefmt::parse_checked(&a), timefmt::parse_checked(&b)) {
            let (sa, sb) = (timefmt::format(ta), timefmt::format(tb));
            // Millisecond precision: compare the instants at that precision.
            let ms = |t: time::OffsetDateTime| t.unix_timestamp_nanos() / 1_000_000;
            prop_assert_eq!(sa.cmp(&sb), ms(ta).cmp(&ms(tb)), "{} vs {}", sa, sb);
        }
    }

    #[test]
    fn calendly_signature_headers_never_panic(
        header in prop_oneof![
            ".{0,120}",
            ("[0-9]{0,14}", "[0-9a-fA-F]{0,70}", ".{0,10}").prop_map(|(t, v, x)| format!("t={t},v1={v}{x}")),
        ],
        body in prop::collection::vec(any::<u8>(), 0..200),
        now in any::<i64>(),
        tolerance in any::<u64>(),
    ) {
        let _ = CalendlySignature::parse(&header);
        let keys = ["a-key", ""];
        prop_assert!(signature::verify(&keys, Some(&header), &body, now, tolerance).is_err() || header.contains("v1="));
    }

    #[test]
    fn calendly_signatures_it_makes_verify(body in prop::collection::vec(any::<u8>(), 0..300), t in 0i64..4_000_000_000) {
        let header = signature::sign("the-key", t, &body);
        prop_assert_eq!(signature::verify(&["other", "the-key"], Some(&header), &body, t, 180), Ok(1));
        let mut tampered = body.clone();
        tampered.push(b'x');
        prop_assert!(signature::verify(&["the-key"], Some(&header), &tampered, t, 180).is_err());
    }

    #[test]
    fn calendly_payloads_never_panic(
        raw in prop::collection::vec(any::<u8>(), 0..300),
        event in prop_oneof![Just("invitee.created"), Just("invitee.canceled"), Just("invitee_no_show.created"), Just("routing_form_submission.created")],
        scheduled in json_value(),
        start in timestamp_like(),
        end in timestamp_like(),
        extra in json_value(),
    ) {
        let _ = Delivery::parse(&raw);
        let body = json!({
            "event": event,
            "payload": {
                "uri": "https://api.calendly.com/scheduled_events/E/invitees/I",
                "email": extra.clone(),
                "name": extra,
                "scheduled_event": {"uri": "https://api.calendly.com/scheduled_events/E", "start_time": start, "end_time": end, "name": scheduled},
            }
        });
        if let Ok(d) = Delivery::parse(body.to_string().as_bytes()) {
            if let Some(se) = d.scheduled_event {
                prop_assert!(timefmt::parse(&se.starts_at).is_some() && timefmt::parse(&se.ends_at).is_some());
                prop_assert!(se.ends_at > se.starts_at);
            }
        }
        let _ = Delivery::parse(json!({"event": event, "payload": scheduled_json(&body)}).to_string().as_bytes());
    }

    #[test]
    fn google_notification_headers_never_panic(
        values in prop::collection::vec(("[a-z-]{1,24}", prop::collection::vec(any::<u8>(), 0..80)), 0..8),
        channel in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut headers = warp::http::HeaderMap::new();
        for (name, value) in values.iter().map(|(n, v)| (n.as_str(), v)).chain([("x-goog-channel-id", &channel)]) {
            if let (Ok(n), Ok(v)) = (warp::http::HeaderName::from_bytes(name.as_bytes()), warp::http::HeaderValue::from_bytes(value)) {
                headers.append(n, v);
            }
        }
        if let Ok(n) = NotificationHeaders::parse(&headers) {
            prop_assert!(!n.channel_id.is_empty() && n.channel_id.len() <= NotificationHeaders::MAX_CHANNEL_ID);
            prop_assert!(n.state.chars().count() <= 40);
        }
    }

    #[test]
    fn google_event_json_never_panics(
        ev in json_value(),
        start in prop_oneof![timestamp_like(), "[0-9]{4}-[0-9]{2}-[0-9]{2}", ".{0,12}"],
        end in prop_oneof![timestamp_like(), "[0-9]{4}-[0-9]{2}-[0-9]{2}", ".{0,12}"],
        date in any::<bool>(),
        tz in proptest::option::of(".{0,20}"),
    ) {
        if let Ok(e) = serde_json::from_value::<GEvent>(ev.clone()) {
            let _ = to_meeting(&e, tz.as_deref());
        }
        let key = if date { "date" } else { "dateTime" };
        let shaped = json!({"id": "e1", "summary": ev, "start": {key: start}, "end": {key: end}});
        if let Ok(e) = serde_json::from_value::<GEvent>(shaped) {
            if let Some(m) = to_meeting(&e, tz.as_deref()) {
                prop_assert!(timefmt::parse(&m.starts_at).is_some(), "{}", m.starts_at);
                prop_assert!(timefmt::parse(&m.ends_at).is_some(), "{}", m.ends_at);
                prop_assert!(m.ends_at >= m.starts_at);
            }
        }
    }

    #[test]
    fn graph_event_json_never_panics(
        ev in json_value(),
        start in prop_oneof![timestamp_like(), "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,9})?", ".{0,24}"],
        end in prop_oneof![timestamp_like(), "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,9})?", ".{0,24}"],
        zone in proptest::option::of(prop_oneof![Just("UTC".to_string()), ".{0,20}"]),
        all_day in proptest::option::of(any::<bool>()),
        show_as in proptest::option::of(prop_oneof![Just("busy".to_string()), Just("oof".to_string()), Just("free".to_string()), ".{0,12}"]),
        kind in proptest::option::of(prop_oneof![Just("occurrence".to_string()), Just("seriesMaster".to_string()), ".{0,12}"]),
        response in proptest::option::of(prop_oneof![Just("Declined".to_string()), ".{0,12}"]),
        me in ".{0,30}",
        text in ".{0,40}",
        cancelled in proptest::option::of(any::<bool>()),
    ) {
        // Anything JSON: deserialized or refused, never a panic.
        if let Ok(e) = serde_json::from_value::<GraphEvent>(ev.clone()) {
            let _ = is_meeting(&e);
            let _ = graph_to_meeting(&e, &me);
        }
        // Graph-shaped, with random values where Graph puts strings and objects.
        let shaped = json!({
            "id": "AAkALg", "subject": text.clone(), "isAllDay": all_day, "showAs": show_as, "type": kind,
            "isCancelled": cancelled,
            "responseStatus": {"response": response},
            "start": {"dateTime": start, "timeZone": zone},
            "end": {"dateTime": end, "timeZone": zone},
            "organizer": {"emailAddress": {"address": me.clone()}},
            "attendees": [{"emailAddress": {"address": me.clone(), "name": text.clone()}, "status": {"response": response}},
                {"emailAddress": {"address": text.clone()}, "type": "resource"}],
            "location": {"displayName": text.clone()}, "onlineMeeting": {"joinUrl": text},
        });
        if let Ok(e) = serde_json::from_value::<GraphEvent>(shaped) {
            let _ = is_meeting(&e);
            if let Some(m) = graph_to_meeting(&e, &me) {
                prop_assert!(timefmt::parse(&m.starts_at).is_some(), "{}", m.starts_at);
                prop_assert!(timefmt::parse(&m.ends_at).is_some(), "{}", m.ends_at);
                prop_assert!(m.ends_at >= m.starts_at);
                prop_assert!(m.title.chars().count() <= 500);
            }
        }
    }

    #[test]
    fn realtime_frames_never_panic(
        text in prop_oneof![".{0,200}", json_value().prop_map(|v| v.to_string())],
        parts in prop::collection::vec(json_value(), 0..7),
        v1 in any::<bool>(),
    ) {
        let vsn = if v1 { Vsn::V1 } else { Vsn::V2 };
        let _ = decode(vsn, &text);
        let _ = decode(Vsn::V2, &Value::Array(parts.clone()).to_string());
        let keys = ["topic", "event", "payload", "ref", "join_ref", "extra", "x"];
        let obj: serde_json::Map<String, Value> = parts.into_iter().enumerate().map(|(i, v)| (keys[i % keys.len()].to_string(), v)).collect();
        let _ = decode(Vsn::V1, &Value::Object(obj).to_string());
        let _ = Vsn::parse(Some(&text));
    }

    #[test]
    fn realtime_bindings_and_filters_never_panic(
        entry in json_value(),
        column in prop_oneof![Just("id".to_string()), Just("starts_at".to_string()), Just("status".to_string()), Just("client_id".to_string()), "[a-z_]{0,12}"],
        op in prop_oneof![prop::sample::select(vec!["eq", "neq", "lt", "lte", "gt", "gte", "in", "is"]).prop_map(String::from), "[a-z]{0,4}"],
        value in prop_oneof![".{0,40}", timestamp_like(), "\\([^)]{0,40}\\)", any::<i64>().prop_map(|n| n.to_string())],
        table in prop_oneof![prop::sample::select(vec!["meetings", "clients", "pipeline", "*"]).prop_map(String::from), ".{0,10}"],
        record in json_value(),
        id in any::<u32>(),
    ) {
        let filter = format!("{column}={op}.{value}");
        let _ = Binding::parse(&entry, id);
        let _ = Binding::parse(&json!({"event": "*", "schema": "public", "table": table, "filter": filter}), id);
        let _ = RowFilter::parse(&value, None);
        for t in ALL_TABLES {
            if let Ok(f) = RowFilter::parse(&filter, Some(t)) {
                let _ = f.matches(t, &record);
                let row = json!({column.clone(): record.clone(), "id": 1, "user_id": 1});
                let _ = f.matches(t, &row);
            }
        }
        if let Ok(f) = RowFilter::parse(&filter, None) {
            for t in ALL_TABLES {
                let _ = f.matches(t, &record);
            }
        }
    }

    #[test]
    fn cursors_never_panic_and_round_trip(
        raw in prop_oneof![".{0,80}", "[A-Za-z0-9_-]{0,80}", json_value().prop_map(|v| base64_url(&v.to_string()))],
        n in 0usize..5,
        starts in timestamp_like(),
        id in any::<i64>(),
    ) {
        let _ = decode_cursor(&raw, n);
        let row = json!({"starts_at": starts, "id": id});
        let c = encode_cursor(&row, &["starts_at", "id"]);
        prop_assert_eq!(decode_cursor(&c, 2).map(|v| v.len()).ok(), Some(2));
    }

    #[test]
    fn config_durations_and_environment_values_never_panic(
        s in prop_oneof![".{0,30}", "[0-9]{1,25}(ns|us|ms|s|m|h|d|w|y|months)", "[0-9]{1,6}[a-z]{0,3}[0-9]{0,4}[a-z]{0,2}"],
        key in prop::sample::select(vec![
            "SYNCGATE_AUTH__TOKEN_TTL", "SYNCGATE_CHANGES__PRUNE_INTERVAL", "SYNCGATE_REALTIME__QUEUE_SIZE",
            "SYNCGATE_SERVER__CORS_ORIGINS", "SYNCGATE_SERVER__BIND", "SYNCGATE_GOOGLE__SYNC_FUTURE",
            "SYNCGATE_LOG__LEVEL", "SYNCGATE_REALTIME__IDLE_TIMEOUT", "SYNCGATE_ALERTS__WEBHOOK_URL",
        ]),
    ) {
        if let Ok(d) = s.parse::<Dur>() {
            prop_assert!(d <= Dur::MAX);
            // What it prints parses back (to the millisecond it prints at).
            let back = d.to_string().parse::<Dur>();
            prop_assert_eq!(back.map(|b| b.0.as_millis()), Ok(d.0.as_millis()));
        }
        let loaded = syncgate::config::Config::load_from(None, vec![(key.to_string(), s.clone())], std::path::Path::new("/nonexistent/config.toml"));
        if let Ok(l) = loaded {
            // What loads is what starts: the same checks startup makes.
            prop_assert!(l.config.validate().is_ok());
        }
    }
}

/// Text shaped like what `@supabase/postgrest-js` puts in a query string,
/// with every piece able to be wrong: operators, quotes, parentheses, nesting.
fn postgrest_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("eq.".to_string()),
        Just("not.".to_string()),
        Just("in.(".to_string()),
        Just("is.null".to_string()),
        Just("or(".to_string()),
        Just("and(".to_string()),
        Just("not.or(".to_string()),
        Just(")".to_string()),
        Just(",".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("*".to_string()),
        Just(".".to_string()),
        "[a-z_]{1,8}",
        "[0-9]{1,4}",
        ".{0,3}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(cases())]

    /// Every PostgREST query string is parsed or refused with a PGRST100
    /// that says why, never a panic; what parses stays within the bounds.
    #[test]
    fn postgrest_query_strings_never_panic(
        pairs in prop::collection::vec(
            (prop_oneof![
                Just("select".to_string()), Just("order".to_string()), Just("or".to_string()), Just("and".to_string()),
                Just("limit".to_string()), Just("offset".to_string()), Just("columns".to_string()), "[a-z_ ]{1,8}",
                Just("title".to_string()), Just("starts_at".to_string()), Just("client_id".to_string()), Just("all_day".to_string()),
            ], prop_oneof![postgrest_text(), postgrest_text().prop_map(|t| format!("({t})"))]),
            0..6,
        ),
    ) {
        use syncgate::api::rest_v1::query::{parse, Limits, Filter};
        let limits = Limits::default();
        match parse(&pairs, limits) {
            Ok(q) => {
                fn count(f: &Filter, depth: usize, max_depth: &mut usize) -> usize {
                    *max_depth = (*max_depth).max(depth);
                    match f {
                        Filter::Cond { .. } => 1,
                        Filter::Group { items, .. } => items.iter().map(|i| count(i, depth + 1, max_depth)).sum(),
                    }
                }
                let mut depth = 0;
                let n: usize = q.filters.iter().map(|f| count(f, 0, &mut depth)).sum();
                prop_assert!(n <= limits.max_conditions);
                prop_assert!(depth <= limits.max_depth);
                // What parses is then typed for each table: a column or a
                // value it refuses is a 4xx in PostgREST's words, never a panic.
                use syncgate::api::rest_v1::translate;
                use syncgate::store::Table;
                for table in [Table::Clients, Table::Meetings, Table::Pipeline] {
                    let typed = translate::condition(table, &q.filters)
                        .and_then(|_| translate::order(table, &q.order))
                        .and_then(|_| translate::projection(table, q.select.as_deref()));
                    if let Err(e) = typed {
                        prop_assert!(e.status.is_client_error(), "{:?}", e);
                        prop_assert!(!e.message.is_empty());
                    }
                }
            }
            Err(e) => {
                prop_assert_eq!(e.code, "PGRST100");
                prop_assert!(e.message.starts_with("failed to parse "));
                prop_assert!(e.details.is_some());
            }
        }
    }
}

fn scheduled_json(body: &Value) -> Value {
    body.get("payload").cloned().unwrap_or(Value::Null)
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
