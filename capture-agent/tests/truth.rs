//! The agent against the shared captures: every `NAME.truth.json` field by field, and the
//! MANIFEST.md truth table rows for what the truth files do not say.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use common::{all_captures, config, pcaps_dir, run, run_json, summaries};
use schemas::{AuthResult, SessionEventKind, SessionSummary};
use serde_json::Value;

/// `RFB 003.008` → `3.8`, `RFB 003.889` → `3.889`.
fn version(truth: &Value) -> Option<String> {
    let s = truth.as_str()?;
    let (major, minor) = s.trim_start_matches("RFB ").split_once('.')?;
    Some(format!(
        "{}.{}",
        major.parse::<u32>().ok()?,
        minor.parse::<u32>().ok()?
    ))
}

fn minor_dialect(v: &str) -> (u32, u32) {
    let (a, b) = v.split_once('.').expect("version");
    (a.parse().expect("major"), b.parse().expect("minor"))
}

/// Truth `auth` values that are not RFB sessions at all.
fn is_non_session(t: &Value) -> bool {
    let auth = t["auth"].as_str().unwrap_or("");
    t.get("server_version").is_none_or(Value::is_null)
        && (auth.starts_with("half-open")
            || auth.starts_with("port-closed")
            || auth == "connection-failed"
            || auth == "no-rfb-data")
}

/// The auth result the truth session calls for.
fn expected_auth(t: &Value) -> AuthResult {
    let auth = t["auth"].as_str().expect("auth");
    match auth {
        "ok" => {
            // Security None without a SecurityResult (3.3, 3.7) is none_required.
            let server = version(&t["server_version"]).expect("server version");
            let client = version(&t["client_version"]).expect("client version");
            let negotiated = minor_dialect(&server).min(minor_dialect(&client));
            if t["security_type"].as_i64() == Some(1) && negotiated < (3, 8) {
                AuthResult::NoneRequired
            } else {
                AuthResult::Ok
            }
        }
        "failed" => AuthResult::Failed,
        // Xvnc's blacklist refusal: the server's version, type 0 and a reason.
        "connection-failed" => AuthResult::TooMany,
        "banner-only" => AuthResult::Abandoned,
        a if a.starts_with("client-left-after-") => AuthResult::Abandoned,
        other => panic!("unknown truth auth value {other:?}"),
    }
}

fn endpoint(s: &SessionSummary) -> (String, String) {
    (
        format!("{}:{}", s.client_ip, s.client_port),
        format!("{}:{}", s.server_ip, s.server_port),
    )
}

fn count(map: &Value, key: &str) -> i64 {
    map.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// Compares one summary with one truth session; `complete` when the truth file lists every
/// field the session has (lab recordings), so an absent field must be absent here too.
fn check_session(file: &str, s: &SessionSummary, t: &Value, complete: bool) {
    let who = format!("{file} {}", t["client"]);
    assert_eq!(
        s.server_version,
        version(&t["server_version"]),
        "{who}: server_version"
    );
    if t.get("client_version").is_some() {
        assert_eq!(
            s.client_version,
            version(&t["client_version"]),
            "{who}: client_version"
        );
    }
    match t.get("security_offered") {
        Some(list) => {
            let want: Vec<i32> = list
                .as_array()
                .expect("security_offered is a list")
                .iter()
                .map(|v| v.as_i64().expect("type") as i32)
                .collect();
            assert_eq!(
                s.security_types_offered, want,
                "{who}: security_types_offered"
            );
        }
        None if complete => assert!(s.security_types_offered.is_empty(), "{who}: offered"),
        None => {}
    }
    match t.get("security_type") {
        Some(v) => assert_eq!(s.security_type, v.as_i64().map(|v| v as i32), "{who}: type"),
        None => assert_eq!(s.security_type, None, "{who}: security_type"),
    }
    assert_eq!(
        s.auth_result,
        expected_auth(t),
        "{who}: auth ({})",
        t["auth"]
    );
    match t.get("failure_reason") {
        Some(r) => assert_eq!(
            s.failure_reason.as_deref(),
            r.as_str(),
            "{who}: failure_reason"
        ),
        None => assert_eq!(s.failure_reason, None, "{who}: failure_reason"),
    }
    match t.get("fb") {
        Some(fb) => {
            assert_eq!(s.width, fb[0].as_i64().map(|v| v as i32), "{who}: width");
            assert_eq!(s.height, fb[1].as_i64().map(|v| v as i32), "{who}: height");
        }
        None if complete => assert_eq!((s.width, s.height), (None, None), "{who}: fb"),
        None => {}
    }
    match t.get("desktop_name") {
        Some(n) => assert_eq!(s.desktop_name.as_deref(), n.as_str(), "{who}: desktop_name"),
        None if complete => assert_eq!(s.desktop_name, None, "{who}: desktop_name"),
        None => {}
    }
    match t.get("shared_flag") {
        Some(f) => assert_eq!(
            s.shared_flag,
            f.as_i64().map(|v| v != 0),
            "{who}: shared_flag"
        ),
        None if complete => assert_eq!(s.shared_flag, None, "{who}: shared_flag"),
        None => {}
    }
    assert!(!s.encrypted, "{who}: not encrypted");
    assert!(!s.partial, "{who}: seen from the start");
    if !complete {
        return;
    }

    // Lab recordings: times, traffic and per-type message counts.
    let micros = |ts: &chrono::DateTime<chrono::Utc>| ts.timestamp_micros();
    let truth_micros = |v: &Value| (v.as_f64().expect("time") * 1e6).round() as i64;
    assert!(
        (micros(&s.start_time) - truth_micros(&t["start"])).abs() <= 1,
        "{who}: start_time {}",
        s.start_time
    );
    let end = s.end_time.as_ref().expect("ended session has an end time");
    assert!(
        (micros(end) - truth_micros(&t["end"])).abs() <= 1,
        "{who}: end_time {end}"
    );
    assert_eq!(
        s.packets_c2s + s.packets_s2c,
        t["packets"].as_i64().expect("packets"),
        "{who}: packets"
    );
    assert_eq!(s.bytes_c2s, count(t, "payload_c2s"), "{who}: bytes_c2s");
    assert_eq!(s.bytes_s2c, count(t, "payload_s2c"), "{who}: bytes_s2c");
    assert_eq!(s.gap_bytes, count(t, "gaps"), "{who}: gap_bytes");
    assert!(!s.desynced, "{who}: a clean recording keeps framing");
    assert_eq!(s.parse_errors, 0, "{who}: parse errors");
    let want_end = if t["rst"].as_bool() == Some(true) {
        "rst"
    } else {
        "fin"
    };
    assert_eq!(s.end_reason.as_deref(), Some(want_end), "{who}: end_reason");
    assert_eq!(
        s.vnc_auth_challenge,
        t.get("challenge").is_some(),
        "{who}: vnc_auth_challenge"
    );

    let client = t.get("client_messages").cloned().unwrap_or(Value::Null);
    let server = t.get("server_messages").cloned().unwrap_or(Value::Null);
    assert_eq!(
        s.key_events,
        count(&client, "KeyEvent") + count(&client, "QEMUClientMessage"),
        "{who}: key_events (KeyEvent + QEMU extended key)"
    );
    assert_eq!(
        s.pointer_events,
        count(&client, "PointerEvent"),
        "{who}: pointer"
    );
    if let Some(p) = t.get("pointer_events") {
        assert_eq!(Some(s.pointer_events), p.as_i64(), "{who}: pointer_events");
    }
    assert_eq!(
        s.framebuffer_update_requests,
        count(&client, "FramebufferUpdateRequest"),
        "{who}: framebuffer_update_requests"
    );
    assert_eq!(
        s.client_cut_text_count,
        count(&client, "ClientCutText"),
        "{who}: client cut text"
    );
    assert_eq!(
        s.server_cut_text_count,
        count(&server, "ServerCutText"),
        "{who}: server cut text"
    );
    assert_eq!(
        s.framebuffer_updates,
        count(&server, "FramebufferUpdate"),
        "{who}: framebuffer_updates"
    );
    let encodings: Vec<i32> = t
        .get("set_encodings")
        .and_then(Value::as_array)
        .map(|l| l.iter().map(|v| v.as_i64().expect("enc") as i32).collect())
        .unwrap_or_default();
    assert_eq!(s.encodings, encodings, "{who}: encodings");

    // Classic cut text: the byte totals are the texts' lengths.
    let cuts = t
        .get("cut_text")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (dir, total) in [
        ("c2s", s.client_cut_text_bytes),
        ("s2c", s.server_cut_text_bytes),
    ] {
        let classic: Vec<&Value> = cuts
            .iter()
            .filter(|c| c["dir"] == dir && c.get("extended").is_none())
            .collect();
        if !classic.is_empty() && classic.len() == cuts.iter().filter(|c| c["dir"] == dir).count() {
            let want: usize = classic
                .iter()
                .map(|c| c["text"].as_str().map_or(0, str::len))
                .sum();
            assert_eq!(total, want as i64, "{who}: {dir} cut text bytes");
        }
    }
    assert_eq!(
        s.clipboard_sha256.is_some(),
        !cuts.is_empty(),
        "{who}: clipboard hash iff cut text"
    );
}

/// Runs one capture and checks it against its truth file; returns the summaries.
fn check_capture(path: &Path) -> Vec<SessionSummary> {
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let (events, result) = run(path, &config(false));
    result.unwrap_or_else(|e| panic!("{file}: {e}"));
    let found = summaries(&events);

    // The same sessions come out when RFB is found by its banner on any port.
    let (any_events, _) = run(path, &config(true));
    if !file.starts_with("ntop-nDPI") {
        let any = summaries(&any_events);
        assert_eq!(
            any.len(),
            found.len(),
            "{file}: --any-port finds the same sessions"
        );
        for (a, b) in any.iter().zip(&found) {
            assert_eq!(a, b, "{file}: --any-port changes nothing");
        }
    }

    // Every session's events: started first, ended last, sequence from 0, ids unique.
    let mut by_session: HashMap<&str, Vec<&schemas::SessionEvent>> = HashMap::new();
    for e in &events {
        by_session.entry(&e.summary.session_id).or_default().push(e);
    }
    for (id, evs) in &by_session {
        assert_eq!(evs[0].kind, SessionEventKind::Started, "{file} {id}");
        assert_eq!(
            evs.last().unwrap().kind,
            SessionEventKind::Ended,
            "{file} {id}"
        );
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e.seq, i as i64, "{file} {id}");
        }
        let auths = evs
            .iter()
            .filter(|e| e.kind == SessionEventKind::Auth)
            .count();
        let s = &evs.last().unwrap().summary;
        let decided = !matches!(s.auth_result, AuthResult::Unknown | AuthResult::Abandoned);
        assert_eq!(
            auths,
            usize::from(decided),
            "{file} {id}: one auth event per outcome"
        );
    }
    let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "{file}: event ids unique");

    // Replaying yields the same ids.
    let (again, _) = run(path, &config(false));
    assert_eq!(
        again.iter().map(|e| &e.event_id).collect::<Vec<_>>(),
        events.iter().map(|e| &e.event_id).collect::<Vec<_>>(),
        "{file}: deterministic ids"
    );

    let truth_path = path.with_extension("truth.json");
    if let Ok(text) = std::fs::read_to_string(&truth_path) {
        let truth: Value = serde_json::from_str(&text).expect("truth json");
        let complete = path.parent().is_some_and(|p| p.ends_with("lab"));
        let sessions = truth["sessions"].as_array().expect("sessions");
        let mut expected = 0;
        for t in sessions {
            let client = t["client"].as_str().expect("client");
            let server = t["server"].as_str().expect("server");
            let matching: Vec<&SessionSummary> = found
                .iter()
                .filter(|s| endpoint(s) == (client.to_string(), server.to_string()))
                .collect();
            if is_non_session(t) {
                assert!(
                    matching.is_empty(),
                    "{file} {client}: {} is no session",
                    t["auth"]
                );
                continue;
            }
            expected += 1;
            assert_eq!(matching.len(), 1, "{file} {client}: one session");
            check_session(&file, matching[0], t, complete);
        }
        assert_eq!(
            found.len(),
            expected,
            "{file}: no sessions beyond the truth file"
        );
    }
    found
}

fn find(found: &[SessionSummary], client_port: i32) -> &SessionSummary {
    found
        .iter()
        .find(|s| s.client_port == client_port)
        .unwrap_or_else(|| panic!("no session from client port {client_port}"))
}

#[test]
fn every_capture_matches_its_truth() {
    let captures = all_captures();
    let mut with_truth = 0;
    for path in &captures {
        check_capture(path);
        if path.with_extension("truth.json").exists() {
            with_truth += 1;
        }
    }
    assert!(with_truth >= 18, "only {with_truth} truth files found");
}

// --- MANIFEST.md truth table rows the truth files do not carry ---

#[test]
fn manifest_suricata_rfb33_and_38() {
    let dir = pcaps_dir().join("public");
    let s33 =
        check_capture(&dir.join("suricata-verify__rfb-protocol-3.3__06-vnc-Password-3.3.pcap"));
    let s = find(&s33, 58048);
    assert_eq!(s.shared_flag, Some(false));
    assert_eq!((s.width, s.height), (Some(800), Some(600)));
    assert_eq!(
        s.desktop_name.as_deref(),
        Some("\\xa0"),
        "the single byte 0xA0"
    );
    assert_eq!(s.key_events, 36);
    // MANIFEST says 367; the client stream holds 368 six-byte PointerEvent segments (no
    // retransmissions), so the bytes say 368.
    assert!(
        (s.pointer_events - 367).abs() <= 1,
        "pointer {}",
        s.pointer_events
    );
    assert!(!s.desynced, "Hextile/ZRLE/cursor updates keep framing");
    assert!(s.vnc_auth_challenge);

    let s38 =
        check_capture(&dir.join("suricata-verify__rfb-protocol-3.8__04-vnc-openwall-3.8.pcap"));
    let s = find(&s38, 58102);
    assert_eq!(s.shared_flag, Some(false));
    assert_eq!((s.width, s.height), (Some(800), Some(600)));
    assert_eq!(s.desktop_name.as_deref(), Some("\\xa0"));
    assert_eq!(s.pointer_events, 38);
    assert!(!s.desynced);
}

#[test]
fn manifest_rfb37_none_is_none_required() {
    let dir = pcaps_dir().join("public");
    let found = check_capture(&dir.join("suricata-verify__rfb-parser__input.pcap"));
    let s = find(&found, 60537);
    assert_eq!(s.auth_result, AuthResult::NoneRequired);
    assert_eq!(s.security_type, Some(1));
}

#[test]
fn manifest_apple_sessions() {
    let dir = pcaps_dir().join("public");
    let found = check_capture(&dir.join("zeek__vncmac.pcap"));
    assert_eq!(find(&found, 52351).auth_result, AuthResult::Abandoned);
    assert_eq!(find(&found, 52352).auth_result, AuthResult::Failed);
    let s = find(&found, 52353);
    assert_eq!(s.auth_result, AuthResult::Ok);
    assert_eq!(s.shared_flag, Some(true), "flag byte 0xC1");
    assert_eq!((s.width, s.height), (Some(1920), Some(1080)));
    let name = s.desktop_name.as_deref().unwrap();
    assert!(name.ends_with("MacMini SSD"), "{name}");
    assert_eq!(name.matches("\\x").count(), 22, "22 binary bytes, escaped");

    // suricata partial-tx: MANIFEST says "not parseable past ARD key exchange", but the ARD
    // exchange has a fixed structure (key length 128 here) and the bytes go on with
    // SecurityResult 0, ClientInit and ServerInit 1280x720 "vmac".
    let found = check_capture(&dir.join("suricata-verify__rfb-partial-tx__in.pcap"));
    let s = find(&found, 46254);
    assert_eq!(s.server_version.as_deref(), Some("3.889"));
    assert_eq!(s.client_version.as_deref(), Some("3.8"));
    assert_eq!(s.security_types_offered, vec![30, 33, 36, 35]);
    assert_eq!(s.security_type, Some(30));
    assert_eq!(s.auth_result, AuthResult::Ok);
    assert_eq!((s.width, s.height), (Some(1280), Some(720)));
    assert_eq!(s.desktop_name.as_deref(), Some("vmac"));
    assert!(!s.desynced);
}

#[test]
fn manifest_mac_to_linux() {
    let dir = pcaps_dir().join("public");
    let found = check_capture(&dir.join("zeek__vnc-mac-to-linux.pcap"));
    assert!(found.iter().all(|s| s.client_port != 49251), "SYN/RST only");
    assert_eq!(found.len(), 3);
    assert_eq!(find(&found, 49257).auth_result, AuthResult::Failed);
    assert_eq!(
        find(&found, 49257).failure_reason,
        None,
        "3.3: no reason string"
    );
    assert_eq!(find(&found, 49259).shared_flag, Some(true));
}

#[test]
fn manifest_ndpi_realvnc_found_only_by_banner() {
    let path = pcaps_dir().join("public/ntop-nDPI__vnc.pcap");
    let (events, result) = run(&path, &config(false));
    result.unwrap();
    assert!(events.is_empty(), "port 6900 is not a VNC port by default");

    let (events, result) = run(&path, &config(true));
    result.unwrap();
    let found = summaries(&events);
    let mut ports: Vec<i32> = found.iter().map(|s| s.client_port).collect();
    ports.sort_unstable();
    assert_eq!(ports, vec![51559, 59791]);
    for s in &found {
        assert_eq!(s.server_port, 6900);
        assert_eq!(s.server_version.as_deref(), Some("4.1"));
        assert_eq!(s.client_version.as_deref(), Some("4.1"));
        assert_eq!(s.security_types_offered, vec![13, 133, 5, 129, 6, 130, 2]);
        assert_eq!(s.security_type, Some(13));
        assert!(s.encrypted, "RealVNC RA2 family");
        assert_eq!(s.auth_result, AuthResult::Unknown);
        assert!(s.gap_bytes > 0, "the capture has gaps");
        assert!(s.bytes_c2s > 0 && s.packets_s2c > 0);
    }
}

#[test]
fn manifest_scanners_and_refusals() {
    let dir = pcaps_dir().join("lab");
    let found = check_capture(&dir.join("e_scanner.pcap"));
    let count = |r: AuthResult| found.iter().filter(|s| s.auth_result == r).count();
    // banner-only=15 and client-left=9 are all abandoned; one Xvnc refusal.
    assert_eq!(count(AuthResult::Abandoned), 24);
    assert_eq!(count(AuthResult::TooMany), 1);

    let found = check_capture(&dir.join("c_bruteforce_vncauth.pcap"));
    let count = |r: AuthResult| found.iter().filter(|s| s.auth_result == r).count();
    assert_eq!(
        (count(AuthResult::Failed), count(AuthResult::TooMany)),
        (5, 3)
    );

    let found = check_capture(&dir.join("c2_bruteforce_nmap_success.pcap"));
    let count = |r: AuthResult| found.iter().filter(|s| s.auth_result == r).count();
    assert_eq!((count(AuthResult::Failed), count(AuthResult::Ok)), (8, 1));

    let found = check_capture(&dir.join("d_noauth_session.pcap"));
    let s = &found[0];
    assert_eq!(
        (s.security_type, s.auth_result),
        (Some(1), AuthResult::Ok),
        "3.8 None"
    );
    assert_eq!(s.shared_flag, Some(true));
}

/// Texts the truth files record only so this test can check they never come out.
fn secrets(truth: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut harmless = Vec::new();
    for t in truth["sessions"].as_array().into_iter().flatten() {
        if let Some(name) = t.get("desktop_name").and_then(Value::as_str) {
            harmless.push(name.to_string());
        }
        let mut texts: Vec<String> = Vec::new();
        if let Some(typed) = t.get("typed").and_then(Value::as_str) {
            texts.push(typed.to_string());
        }
        for c in t
            .get("cut_text")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(text) = c.get("text").and_then(Value::as_str) {
                texts.push(text.to_string());
            }
        }
        for key in ["challenge", "response"] {
            if let Some(hex) = t.get(key).and_then(Value::as_str) {
                texts.push(hex.to_string());
            }
        }
        for text in texts {
            for piece in text.split('\n').map(str::trim) {
                if piece.len() >= 4 {
                    out.push(piece.to_string());
                }
            }
        }
    }
    // A typed word that is also part of the desktop name ("rfb33" in "lab-rfb33") says nothing.
    out.retain(|s| !harmless.iter().any(|h| h.contains(s.as_str())));
    out
}

#[test]
fn typed_text_and_clipboard_never_leave_the_agent() {
    let mut checked = 0;
    for path in all_captures() {
        let Ok(text) = std::fs::read_to_string(path.with_extension("truth.json")) else {
            continue;
        };
        let truth: Value = serde_json::from_str(&text).unwrap();
        let secrets = secrets(&truth);
        if secrets.is_empty() {
            continue;
        }
        let output = run_json(&path, &config(false));
        assert!(output.lines().count() > 0);
        for line in output.lines() {
            let v: Value = serde_json::from_str(line).expect("every line is JSON");
            assert!(
                matches!(
                    v["type"].as_str(),
                    Some("session_event" | "session_summary")
                ),
                "{line}"
            );
        }
        let lower = output.to_lowercase();
        for secret in &secrets {
            let json_form = serde_json::to_string(secret).unwrap();
            let json_form = &json_form[1..json_form.len() - 1];
            assert!(
                !output.contains(secret.as_str())
                    && !output.contains(json_form)
                    && !lower.contains(&secret.to_lowercase()),
                "{}: output contains {secret:?}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} secrets checked");
}

#[test]
fn stdout_lines_carry_type_and_flat_summary() {
    let path = pcaps_dir().join("lab/g1_rfb33_server.pcap");
    let output = run_json(&path, &config(false));
    let lines: Vec<Value> = output
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let summaries: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "session_summary")
        .collect();
    assert_eq!(summaries.len(), 2);
    for s in &summaries {
        for field in [
            "session_id",
            "agent_id",
            "client_ip",
            "client_port",
            "server_ip",
            "server_port",
            "start_time",
            "end_time",
            "client_version",
            "server_version",
            "security_types_offered",
            "security_type",
            "auth_result",
            "failure_reason",
            "shared_flag",
            "width",
            "height",
            "desktop_name",
            "encrypted",
            "partial",
            "desynced",
            "bytes_c2s",
            "bytes_s2c",
            "packets_c2s",
            "packets_s2c",
            "key_events",
            "pointer_events",
            "client_cut_text_count",
            "client_cut_text_bytes",
            "server_cut_text_count",
            "server_cut_text_bytes",
            "framebuffer_updates",
            "file_transfer_messages",
            "bell_count",
            "encodings",
            "parse_errors",
        ] {
            assert!(s.get(field).is_some(), "summary lacks {field}");
        }
        let start = s["start_time"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(start).is_ok(),
            "{start}"
        );
        assert_eq!(s["server_version"], "3.3");
    }
    let events: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "session_event")
        .collect();
    assert!(events
        .iter()
        .all(|e| e["summary"]["session_id"].is_string()));
    let mut kinds: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &events {
        kinds
            .entry(e["summary"]["session_id"].as_str().unwrap())
            .or_default()
            .push(e["kind"].as_str().unwrap());
    }
    assert_eq!(kinds.len(), 2);
    for k in kinds.values() {
        assert_eq!(k, &["started", "auth", "ended"]);
    }
}
