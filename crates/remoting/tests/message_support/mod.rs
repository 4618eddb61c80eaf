//! Loads the wire captures in `shared/captures/*.jsonl` for the `message_*` and
//! `broker_headers_*` golden tests: every frame is decoded from its `frame_b64` through the
//! real frame codec, so the tests see exactly what a server or client would.

#![allow(dead_code)]

use std::path::PathBuf;

use bytes::BytesMut;
use remoting::codec;
use remoting::RemotingCommand;
use serde_json::Value;

/// One captured frame.
pub struct Frame {
    /// File name, e.g. `java-4.9.8.jsonl`.
    pub file: String,
    /// `c2s` or `s2c`.
    pub dir: String,
    /// `namesrv` or `broker`.
    pub peer: String,
    pub conn: i64,
    pub run: String,
    /// The capture line as written.
    pub json: Value,
    /// The frame decoded by `remoting::codec::decode`.
    pub cmd: RemotingCommand,
}

impl Frame {
    /// Whether this is a client-to-server request with `code`.
    pub fn is_request(&self, code: i32) -> bool {
        self.dir == "c2s" && !self.cmd.is_response() && self.cmd.code == code
    }
}

/// Every frame of every capture file, in file then line order; `None` (with a printed note)
/// when the captures are not there.
pub fn load_all() -> Option<Vec<Frame>> {
    let dir = testkit::captures_dir()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut frames = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        for json in testkit::capture(&file)? {
            let raw = testkit::b64(&json["frame_b64"]);
            let mut buf = BytesMut::from(&raw[..]);
            let cmd = codec::decode(&mut buf, codec::DEFAULT_MAX_FRAME_SIZE)
                .unwrap_or_else(|e| panic!("{file}: frame does not decode: {e}"))
                .unwrap_or_else(|| panic!("{file}: incomplete frame"));
            assert!(buf.is_empty(), "{file}: trailing bytes after frame");
            frames.push(Frame {
                file: file.clone(),
                dir: json["dir"].as_str().unwrap().to_string(),
                peer: json["peer"].as_str().unwrap().to_string(),
                conn: json["conn"].as_i64().unwrap(),
                run: json["run"].as_str().unwrap_or_default().to_string(),
                json,
                cmd,
            });
        }
    }
    Some(frames)
}

/// The request `resp` answers: same file and connection, same opaque, opposite direction.
pub fn request_of<'a>(frames: &'a [Frame], resp: &Frame) -> Option<&'a Frame> {
    frames.iter().find(|f| {
        f.file == resp.file
            && f.conn == resp.conn
            && f.dir != resp.dir
            && !f.cmd.is_response()
            && f.cmd.opaque == resp.cmd.opaque
    })
}

/// Responses (to requests with `req_code`) paired with their requests.
pub fn exchanges(frames: &[Frame], req_code: i32) -> Vec<(&Frame, &Frame)> {
    frames
        .iter()
        .filter(|f| f.cmd.is_response())
        .filter_map(|resp| {
            let req = request_of(frames, resp)?;
            (req.cmd.code == req_code).then_some((req, resp))
        })
        .collect()
}
