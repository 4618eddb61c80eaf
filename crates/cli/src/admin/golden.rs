//! Test helper: the requests upstream `mqadmin` 4.9.8 sent, from the shared wire capture, to
//! check that `apogee admin` sends the same ext fields and bodies.

use std::collections::HashMap;

use base64::Engine;

/// One captured request: ext fields without the ACL ones, and the body.
pub(crate) type Captured = (HashMap<String, String>, Vec<u8>);

/// `(ext fields without the ACL ones, body)` of every client request with `code` in `run`;
/// `None` (with a note) when the capture file is absent.
pub(crate) fn captured_requests(run: &str, code: i32) -> Option<Vec<Captured>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/captures/mqadmin-4.9.8.jsonl"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("skipped: capture {path} is absent");
        return None;
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["run"] != run || v["dir"] != "c2s" || v["code"] != code {
            continue;
        }
        let mut ext: HashMap<String, String> = v["header"]["extFields"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        ext.remove("AccessKey");
        ext.remove("Signature");
        let body = base64::engine::general_purpose::STANDARD
            .decode(v["body_b64"].as_str().unwrap_or(""))
            .unwrap();
        out.push((ext, body));
    }
    assert!(!out.is_empty(), "no request {code} in run {run}");
    Some(out)
}
