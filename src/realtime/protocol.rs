//! Phoenix channel frame codec for the realtime socket, vsn 1.0.0 (JSON
//! object frames) and 2.0.0 (JSON array frames). It owns only the text
//! layout of frames: decoding a client frame into its five parts, and
//! building server frames from already-serialized payload JSON. What the
//! events mean is decided elsewhere.

use serde_json::Value;

/// The serializer protocol version a socket negotiated with `?vsn=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    /// `1.0.0`: `{"topic":..,"event":..,"payload":..,"ref":..,"join_ref":..}`.
    V1,
    /// `2.0.0`: `[join_ref, ref, topic, event, payload]`.
    V2,
}

impl Vsn {
    /// Reads the `vsn` query parameter. A socket without one speaks 1.0.0,
    /// which is what Phoenix assumes too.
    pub fn parse(q: Option<&str>) -> Result<Vsn, Refusal> {
        match q {
            None | Some("1.0.0") => Ok(Vsn::V1),
            Some("2.0.0") => Ok(Vsn::V2),
            Some(other) => Err(Refusal(format!("unsupported vsn \"{}\": use 1.0.0 or 2.0.0", truncate_for_message(other)))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        }
    }
}

/// One decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub join_ref: Option<String>,
    pub reference: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

/// Why a client's request is refused: the sentence the client is sent
/// (in a `phx_reply` error, a `system` message or a 4xx before the upgrade).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl From<String> for Refusal {
    fn from(sentence: String) -> Refusal {
        Refusal(sentence)
    }
}

impl From<&str> for Refusal {
    fn from(sentence: &str) -> Refusal {
        Refusal(sentence.to_owned())
    }
}

/// Why a frame could not be decoded, with whatever could be salvaged so the
/// server can still answer with an error reply addressed to the right
/// topic/ref.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub message: String,
    pub join_ref: Option<String>,
    pub reference: Option<String>,
    pub topic: Option<String>,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one text frame. Never panics: serde_json refuses nesting deeper
/// than 128 levels, so hostile input cannot exhaust the stack here.
pub fn decode(vsn: Vsn, text: &str) -> Result<Inbound, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError {
        message: format!("frame is not valid JSON: {e}"),
        join_ref: None,
        reference: None,
        topic: None,
    })?;
    match vsn {
        Vsn::V1 => decode_v1(value),
        Vsn::V2 => decode_v2(value),
    }
}

fn decode_v1(value: Value) -> Result<Inbound, DecodeError> {
    let mut map = match value {
        Value::Object(map) => map,
        other => {
            return Err(bare_error(format!(
                "vsn 1.0.0 frames must be a JSON object with topic, event, payload, ref and join_ref, got {}",
                kind(&other)
            )))
        }
    };
    // Salvage first: every later failure should still be answerable on the
    // topic/ref the client will be listening for.
    let join_ref = map.get("join_ref").and_then(salvage_ref);
    let reference = map.get("ref").and_then(salvage_ref);
    let topic = map.get("topic").and_then(|v| v.as_str().map(str::to_owned));
    let fail = |message: String| DecodeError { message, join_ref: join_ref.clone(), reference: reference.clone(), topic: topic.clone() };

    let join_ref_checked = read_ref(map.get("join_ref"), "join_ref").map_err(|e| fail(e.0))?;
    let ref_checked = read_ref(map.get("ref"), "ref").map_err(|e| fail(e.0))?;
    let topic_checked = match map.get("topic") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(fail(format!("topic must be a string, got {}", kind(other)))),
        None => return Err(fail("frame has no topic".to_owned())),
    };
    let event = match map.get("event") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(fail(format!("event must be a string, got {}", kind(other)))),
        None => return Err(fail("frame has no event".to_owned())),
    };
    // A missing payload is treated as `{}`: older clients omit it on
    // heartbeats and leaves.
    let payload = match map.remove("payload") {
        None => Value::Object(serde_json::Map::new()),
        Some(p @ Value::Object(_)) => p,
        Some(other) => return Err(fail(format!("payload must be a JSON object, got {}", kind(&other)))),
    };
    Ok(Inbound { join_ref: join_ref_checked, reference: ref_checked, topic: topic_checked, event, payload })
}

fn decode_v2(value: Value) -> Result<Inbound, DecodeError> {
    let items = match value {
        Value::Array(items) => items,
        other => {
            return Err(bare_error(format!(
                "vsn 2.0.0 frames must be a JSON array [join_ref, ref, topic, event, payload], got {}",
                kind(&other)
            )))
        }
    };
    let join_ref = items.first().and_then(salvage_ref);
    let reference = items.get(1).and_then(salvage_ref);
    let topic = items.get(2).and_then(|v| v.as_str().map(str::to_owned));
    let fail = |message: String| DecodeError { message, join_ref: join_ref.clone(), reference: reference.clone(), topic: topic.clone() };
    if items.len() != 5 {
        return Err(fail(format!(
            "vsn 2.0.0 frames must be an array of exactly 5 elements [join_ref, ref, topic, event, payload], got {}",
            items.len()
        )));
    }
    let mut it = items.into_iter();
    // Length is checked above, so each `next` yields; the fallbacks only
    // keep this path free of panics.
    let (Some(j), Some(r), Some(t), Some(e), Some(p)) = (it.next(), it.next(), it.next(), it.next(), it.next()) else {
        return Err(fail("vsn 2.0.0 frames must have 5 elements".to_owned()));
    };
    let join_ref_checked = read_ref(Some(&j), "join_ref").map_err(|e| fail(e.0))?;
    let ref_checked = read_ref(Some(&r), "ref").map_err(|e| fail(e.0))?;
    let topic_checked = match t {
        Value::String(s) => s,
        other => return Err(fail(format!("topic must be a string, got {}", kind(&other)))),
    };
    let event = match e {
        Value::String(s) => s,
        other => return Err(fail(format!("event must be a string, got {}", kind(&other)))),
    };
    let payload = match p {
        p @ Value::Object(_) => p,
        other => return Err(fail(format!("payload must be a JSON object, got {}", kind(&other)))),
    };
    Ok(Inbound { join_ref: join_ref_checked, reference: ref_checked, topic: topic_checked, event, payload })
}

fn bare_error(message: String) -> DecodeError {
    DecodeError { message, join_ref: None, reference: None, topic: None }
}

/// A ref as the client meant it: strings as-is, numbers (sent by some
/// hand-written clients) as their decimal text, null/absent as None.
fn read_ref(v: Option<&Value>, name: &str) -> Result<Option<String>, Refusal> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(Refusal(format!("{name} must be a string or null, got {}", kind(other)))),
    }
}

fn salvage_ref(v: &Value) -> Option<String> {
    read_ref(Some(v), "ref").ok().flatten()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keeps error sentences short when the offending text is attacker-sized.
fn truncate_for_message(s: &str) -> String {
    shorten(s, 40)
}

/// `s` cut to its first `max` characters (marked with `…`), for quoting
/// client-sent text in an error sentence.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or("")),
        None => s.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Appends `s` as a JSON string literal (with quotes). Hand-rolled so that
/// building a frame is plain string appends with no fallible serializer.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0x00..=0x1f => None,
            _ => continue,
        };
        // Every byte matched above is ASCII, so `start..i` and `i + 1` are
        // char boundaries.
        out.push_str(s.get(start..i).unwrap_or(""));
        match esc {
            Some(e) => out.push_str(e),
            None => {
                out.push_str("\\u00");
                out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
                out.push(char::from_digit(u32::from(b & 0x0f), 16).unwrap_or('0'));
            }
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or(""));
    out.push('"');
}

fn push_opt_json_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    }
}

fn push_u32(out: &mut String, n: u32) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(out, "{n}");
}

/// A capacity hint (escaping may add a little); avoids regrowing the buffer.
fn frame_capacity(join_ref: Option<&str>, reference: Option<&str>, topic: &str, event: &str, payload_len: usize) -> usize {
    48 + join_ref.map_or(4, str::len) + reference.map_or(4, str::len) + topic.len() + event.len() + payload_len
}

/// Writes the frame around a payload produced by `write_payload`, so callers
/// that build the payload themselves (changes) need no intermediate string.
fn encode_with(
    vsn: Vsn,
    join_ref: Option<&str>,
    reference: Option<&str>,
    topic: &str,
    event: &str,
    payload_len_hint: usize,
    write_payload: impl FnOnce(&mut String),
) -> String {
    let mut out = String::with_capacity(frame_capacity(join_ref, reference, topic, event, payload_len_hint));
    match vsn {
        Vsn::V1 => {
            out.push_str("{\"topic\":");
            push_json_str(&mut out, topic);
            out.push_str(",\"event\":");
            push_json_str(&mut out, event);
            out.push_str(",\"payload\":");
            write_payload(&mut out);
            out.push_str(",\"ref\":");
            push_opt_json_str(&mut out, reference);
            out.push_str(",\"join_ref\":");
            push_opt_json_str(&mut out, join_ref);
            out.push('}');
        }
        Vsn::V2 => {
            out.push('[');
            push_opt_json_str(&mut out, join_ref);
            out.push(',');
            push_opt_json_str(&mut out, reference);
            out.push(',');
            push_json_str(&mut out, topic);
            out.push(',');
            push_json_str(&mut out, event);
            out.push(',');
            write_payload(&mut out);
            out.push(']');
        }
    }
    out
}

/// Builds a frame. `payload_json` must already be valid JSON (an object);
/// it is inserted verbatim so one serialization can serve many sockets.
pub fn encode(vsn: Vsn, join_ref: Option<&str>, reference: Option<&str>, topic: &str, event: &str, payload_json: &str) -> String {
    encode_with(vsn, join_ref, reference, topic, event, payload_json.len(), |out| out.push_str(payload_json))
}

/// A `postgres_changes` frame: payload `{"ids":[..],"data":<data_json>}`,
/// join_ref and ref null. `data_json` is inserted verbatim.
pub fn encode_change(vsn: Vsn, topic: &str, ids: &[u32], data_json: &str) -> String {
    let hint = 20 + ids.len() * 11 + data_json.len();
    encode_with(vsn, None, None, topic, "postgres_changes", hint, |out| {
        out.push_str("{\"ids\":[");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_u32(out, *id);
        }
        out.push_str("],\"data\":");
        out.push_str(data_json);
        out.push('}');
    })
}

/// `phx_reply` with `{"status":"ok","response":<response_json>}`.
pub fn reply_ok(vsn: Vsn, join_ref: Option<&str>, reference: Option<&str>, topic: &str, response_json: &str) -> String {
    encode_with(vsn, join_ref, reference, topic, "phx_reply", 32 + response_json.len(), |out| {
        out.push_str("{\"status\":\"ok\",\"response\":");
        out.push_str(response_json);
        out.push('}');
    })
}

/// `phx_reply` with `{"status":"error","response":{"reason":<reason>}}`.
pub fn reply_error(vsn: Vsn, join_ref: Option<&str>, reference: Option<&str>, topic: &str, reason: &str) -> String {
    encode_with(vsn, join_ref, reference, topic, "phx_reply", 48 + reason.len(), |out| {
        out.push_str("{\"status\":\"error\",\"response\":{\"reason\":");
        push_json_str(out, reason);
        out.push_str("}}");
    })
}

/// A `system` event for the `postgres_changes` extension, ref null.
pub fn system(vsn: Vsn, join_ref: Option<&str>, topic: &str, status: &str, message: &str, extra: &[(&str, Value)]) -> String {
    system_with_extension(vsn, join_ref, topic, "postgres_changes", status, message, extra)
}

/// A `system` event, ref null, payload
/// `{"extension":..,"status":..,"message":..,"channel":..,<extra>..}` where
/// `channel` is the topic without its `realtime:` prefix. Extra keys that
/// repeat one of the four fixed keys are skipped so the object never has
/// duplicate keys.
pub fn system_with_extension(
    vsn: Vsn,
    join_ref: Option<&str>,
    topic: &str,
    extension: &str,
    status: &str,
    message: &str,
    extra: &[(&str, Value)],
) -> String {
    let channel = topic.strip_prefix("realtime:").unwrap_or(topic);
    let hint = 64 + extension.len() + status.len() + message.len() + channel.len() + extra.len() * 24;
    encode_with(vsn, join_ref, None, topic, "system", hint, |out| {
        out.push_str("{\"extension\":");
        push_json_str(out, extension);
        out.push_str(",\"status\":");
        push_json_str(out, status);
        out.push_str(",\"message\":");
        push_json_str(out, message);
        out.push_str(",\"channel\":");
        push_json_str(out, channel);
        for (key, value) in extra {
            if matches!(*key, "extension" | "status" | "message" | "channel") {
                continue;
            }
            out.push(',');
            push_json_str(out, key);
            out.push(':');
            // Serializing a Value cannot fail (its keys are strings); "null"
            // keeps the frame well-formed regardless.
            match serde_json::to_string(value) {
                Ok(s) => out.push_str(&s),
                Err(_) => out.push_str("null"),
            }
        }
        out.push('}');
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Value {
        match serde_json::from_str(s) {
            Ok(v) => v,
            Err(e) => panic!("not JSON ({e}): {s}"),
        }
    }

    #[test]
    fn vsn_parse() {
        assert_eq!(Vsn::parse(None), Ok(Vsn::V1));
        assert_eq!(Vsn::parse(Some("1.0.0")), Ok(Vsn::V1));
        assert_eq!(Vsn::parse(Some("2.0.0")), Ok(Vsn::V2));
        assert!(Vsn::parse(Some("3.0.0")).is_err());
        assert!(Vsn::parse(Some("")).is_err());
        let long = "x".repeat(10_000);
        let err = Vsn::parse(Some(&long)).unwrap_err();
        assert!(err.0.len() < 200, "{err}");
    }

    #[test]
    fn decode_v2_join() {
        let f = decode(Vsn::V2, r#"["1","1","realtime:room","phx_join",{"config":{"postgres_changes":[]},"access_token":"t"}]"#).unwrap();
        assert_eq!(f.join_ref.as_deref(), Some("1"));
        assert_eq!(f.reference.as_deref(), Some("1"));
        assert_eq!(f.topic, "realtime:room");
        assert_eq!(f.event, "phx_join");
        assert_eq!(f.payload["access_token"], "t");
    }

    #[test]
    fn decode_v2_heartbeat_null_join_ref() {
        let f = decode(Vsn::V2, r#"[null,"5","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!(f.join_ref, None);
        assert_eq!(f.reference.as_deref(), Some("5"));
        assert_eq!(f.payload, json!({}));
    }

    #[test]
    fn decode_v1() {
        let f = decode(Vsn::V1, r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"3","join_ref":null}"#).unwrap();
        assert_eq!(f.topic, "phoenix");
        assert_eq!(f.event, "heartbeat");
        assert_eq!(f.reference.as_deref(), Some("3"));
        assert_eq!(f.join_ref, None);
        // Missing payload and refs are tolerated.
        let f = decode(Vsn::V1, r#"{"topic":"phoenix","event":"heartbeat"}"#).unwrap();
        assert_eq!(f.payload, json!({}));
        assert_eq!(f.reference, None);
    }

    #[test]
    fn numeric_refs_become_strings() {
        let f = decode(Vsn::V2, r#"[7,12,"t","e",{}]"#).unwrap();
        assert_eq!(f.join_ref.as_deref(), Some("7"));
        assert_eq!(f.reference.as_deref(), Some("12"));
        let f = decode(Vsn::V1, r#"{"topic":"t","event":"e","payload":{},"ref":-3,"join_ref":18446744073709551615}"#).unwrap();
        assert_eq!(f.reference.as_deref(), Some("-3"));
        assert_eq!(f.join_ref.as_deref(), Some("18446744073709551615"));
    }

    #[test]
    fn round_trip_both_vsns() {
        for vsn in [Vsn::V1, Vsn::V2] {
            for (j, r) in [(Some("1"), Some("2")), (None, Some("5")), (None, None)] {
                let text = encode(vsn, j, r, "realtime:room", "phx_join", r#"{"a":[1,2]}"#);
                let f = decode(vsn, &text).unwrap();
                assert_eq!(f.join_ref.as_deref(), j);
                assert_eq!(f.reference.as_deref(), r);
                assert_eq!(f.topic, "realtime:room");
                assert_eq!(f.event, "phx_join");
                assert_eq!(f.payload, json!({"a":[1,2]}));
            }
        }
    }

    #[test]
    fn exact_layouts() {
        assert_eq!(
            encode(Vsn::V2, None, Some("5"), "phoenix", "phx_reply", r#"{"status":"ok","response":{}}"#),
            r#"[null,"5","phoenix","phx_reply",{"status":"ok","response":{}}]"#
        );
        assert_eq!(
            encode(Vsn::V1, Some("1"), Some("5"), "phoenix", "phx_reply", "{}"),
            r#"{"topic":"phoenix","event":"phx_reply","payload":{},"ref":"5","join_ref":"1"}"#
        );
        assert_eq!(
            reply_ok(Vsn::V2, None, Some("5"), "phoenix", "{}"),
            r#"[null,"5","phoenix","phx_reply",{"status":"ok","response":{}}]"#
        );
    }

    #[test]
    fn escaping_topic() {
        let topic = "realtime:a\"b\\c\u{e9}\u{1f600}\n\u{1}\u{7f}";
        for vsn in [Vsn::V1, Vsn::V2] {
            let text = encode(vsn, Some("q\"1"), Some("\\"), topic, "ev\t", "{}");
            let f = decode(vsn, &text).unwrap();
            assert_eq!(f.topic, topic);
            assert_eq!(f.event, "ev\t");
            assert_eq!(f.join_ref.as_deref(), Some("q\"1"));
            assert_eq!(f.reference.as_deref(), Some("\\"));
        }
        let mut s = String::new();
        push_json_str(&mut s, "\u{1}\u{1f}\u{8}\u{c}");
        assert_eq!(s, r#""\u0001\u001f\b\f""#);
        // Our escaper agrees with serde_json's on every char below 0x80.
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut ours = String::new();
        push_json_str(&mut ours, &all);
        assert_eq!(parse(&ours), Value::String(all));
    }

    #[test]
    fn change_frame() {
        let data = r#"{"schema":"public","table":"meetings","type":"INSERT"}"#;
        let v2 = encode_change(Vsn::V2, "realtime:room", &[30636876, 0, u32::MAX], data);
        assert_eq!(
            v2,
            r#"[null,null,"realtime:room","postgres_changes",{"ids":[30636876,0,4294967295],"data":{"schema":"public","table":"meetings","type":"INSERT"}}]"#
        );
        let v1 = encode_change(Vsn::V1, "realtime:room", &[], data);
        let v = parse(&v1);
        assert_eq!(v["payload"]["ids"], json!([]));
        assert_eq!(v["payload"]["data"]["table"], "meetings");
        assert_eq!(v["ref"], Value::Null);
        assert_eq!(v["join_ref"], Value::Null);
        assert_eq!(v["event"], "postgres_changes");
        let f = decode(Vsn::V2, &v2).unwrap();
        assert_eq!(f.payload["ids"], json!([30636876, 0, 4294967295u32]));
    }

    #[test]
    fn reply_error_frame() {
        let t = reply_error(Vsn::V2, Some("1"), Some("1"), "realtime:room", "bad \"token\"");
        assert_eq!(t, r#"["1","1","realtime:room","phx_reply",{"status":"error","response":{"reason":"bad \"token\""}}]"#);
    }

    #[test]
    fn system_frames() {
        let t = system(Vsn::V2, Some("1"), "realtime:room", "ok", "Subscribed to PostgreSQL", &[]);
        assert_eq!(
            t,
            r#"["1",null,"realtime:room","system",{"extension":"postgres_changes","status":"ok","message":"Subscribed to PostgreSQL","channel":"room"}]"#
        );
        let t = system(
            Vsn::V1,
            Some("1"),
            "realtime:room",
            "gap",
            "refetch",
            &[("seq", json!(42)), ("status", json!("dup")), ("x\"y", json!({"a":[1]}))],
        );
        let v = parse(&t);
        assert_eq!(v["payload"]["seq"], 42);
        assert_eq!(v["payload"]["status"], "gap");
        assert_eq!(v["payload"]["x\"y"], json!({"a":[1]}));
        assert!(t.starts_with(r#"{"topic":"realtime:room","event":"system","payload":{"extension":"postgres_changes","status":"gap","message":"refetch","channel":"room","seq":42"#));
        let t = system_with_extension(Vsn::V2, Some("1"), "plain", "system", "error", "Token has expired", &[]);
        assert_eq!(
            t,
            r#"["1",null,"plain","system",{"extension":"system","status":"error","message":"Token has expired","channel":"plain"}]"#
        );
    }

    #[test]
    fn malformed_not_json() {
        for vsn in [Vsn::V1, Vsn::V2] {
            for text in ["", "nope", "[", "{\"topic\":", "\u{0}", "[1,2,3,4,5]]"] {
                let e = decode(vsn, text).unwrap_err();
                assert!(e.message.contains("not valid JSON"), "{e:?}");
                assert_eq!(e.topic, None);
            }
        }
    }

    #[test]
    fn malformed_wrong_shape() {
        let e = decode(Vsn::V2, r#"{"topic":"t","event":"e","payload":{}}"#).unwrap_err();
        assert!(e.message.contains("array"), "{}", e.message);
        let e = decode(Vsn::V1, r#"["1","2","t","e",{}]"#).unwrap_err();
        assert!(e.message.contains("object"), "{}", e.message);
        for text in ["1", "\"s\"", "null", "true"] {
            assert!(decode(Vsn::V1, text).is_err());
            assert!(decode(Vsn::V2, text).is_err());
        }
    }

    #[test]
    fn malformed_v2_salvages() {
        // Wrong length: salvage what is there.
        let e = decode(Vsn::V2, r#"["1","2","realtime:x","phx_join"]"#).unwrap_err();
        assert!(e.message.contains("exactly 5"), "{}", e.message);
        assert_eq!(e.join_ref.as_deref(), Some("1"));
        assert_eq!(e.reference.as_deref(), Some("2"));
        assert_eq!(e.topic.as_deref(), Some("realtime:x"));
        let e = decode(Vsn::V2, r#"["1","2","realtime:x","phx_join",{},6]"#).unwrap_err();
        assert_eq!(e.topic.as_deref(), Some("realtime:x"));
        let e = decode(Vsn::V2, "[]").unwrap_err();
        assert_eq!((e.join_ref, e.reference, e.topic), (None, None, None));
        // Payload not an object.
        for p in ["[]", "null", "1", "\"x\"", "true"] {
            let e = decode(Vsn::V2, &format!(r#"["1",3,"realtime:x","phx_join",{p}]"#)).unwrap_err();
            assert!(e.message.contains("payload"), "{}", e.message);
            assert_eq!(e.join_ref.as_deref(), Some("1"));
            assert_eq!(e.reference.as_deref(), Some("3"));
            assert_eq!(e.topic.as_deref(), Some("realtime:x"));
        }
        // Wrong types.
        let e = decode(Vsn::V2, r#"["1","2",5,"e",{}]"#).unwrap_err();
        assert!(e.message.contains("topic"), "{}", e.message);
        assert_eq!(e.topic, None);
        assert_eq!(e.reference.as_deref(), Some("2"));
        let e = decode(Vsn::V2, r#"["1","2","t",null,{}]"#).unwrap_err();
        assert!(e.message.contains("event"), "{}", e.message);
        assert_eq!(e.topic.as_deref(), Some("t"));
        let e = decode(Vsn::V2, r#"[true,"2","t","e",{}]"#).unwrap_err();
        assert!(e.message.contains("join_ref"), "{}", e.message);
        assert_eq!(e.join_ref, None);
        assert_eq!(e.reference.as_deref(), Some("2"));
        let e = decode(Vsn::V2, r#"["1",{},"t","e",{}]"#).unwrap_err();
        assert!(e.message.contains("ref"), "{}", e.message);
        assert_eq!(e.join_ref.as_deref(), Some("1"));
    }

    #[test]
    fn malformed_v1_salvages() {
        let e = decode(Vsn::V1, r#"{"topic":"realtime:x","event":"phx_join","payload":[],"ref":"9","join_ref":"8"}"#).unwrap_err();
        assert!(e.message.contains("payload"));
        assert_eq!(e.topic.as_deref(), Some("realtime:x"));
        assert_eq!(e.reference.as_deref(), Some("9"));
        assert_eq!(e.join_ref.as_deref(), Some("8"));
        let e = decode(Vsn::V1, r#"{"topic":"realtime:x","payload":{},"ref":9}"#).unwrap_err();
        assert!(e.message.contains("event"));
        assert_eq!(e.reference.as_deref(), Some("9"));
        let e = decode(Vsn::V1, r#"{"event":"e","ref":"1"}"#).unwrap_err();
        assert!(e.message.contains("topic"));
        assert_eq!(e.reference.as_deref(), Some("1"));
        let e = decode(Vsn::V1, r#"{"topic":"t","event":"e","payload":null}"#).unwrap_err();
        assert!(e.message.contains("payload"));
        let e = decode(Vsn::V1, r#"{"topic":"t","event":"e","ref":[1]}"#).unwrap_err();
        assert!(e.message.contains("ref"));
        assert_eq!(e.topic.as_deref(), Some("t"));
    }

    #[test]
    fn huge_nesting_does_not_overflow() {
        for depth in [200usize, 100_000] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert!(decode(Vsn::V2, &deep).is_err());
            let obj = format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            assert!(decode(Vsn::V1, &obj).is_err());
            let frame = format!(r#"["1","2","t","e",{{"a":{}1{}}}]"#, "[".repeat(depth), "]".repeat(depth));
            let e = decode(Vsn::V2, &frame).unwrap_err();
            assert!(e.message.contains("not valid JSON"));
        }
        // Nesting within the limit is fine.
        let ok = format!(r#"["1","2","t","e",{{"a":{}1{}}}]"#, "[".repeat(100), "]".repeat(100));
        assert!(decode(Vsn::V2, &ok).is_ok());
    }

    #[test]
    fn push_u32_digits() {
        for n in [0u32, 1, 9, 10, 99, 100, 12345, u32::MAX] {
            let mut s = String::new();
            push_u32(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
