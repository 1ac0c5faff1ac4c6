//! Issue 26, "hardening, second round": the hostile probe's reproductions, run on the real
//! binary. Each gets a clear error (exit 1, nothing written) or a bounded, correct result:
//! build options no model can hold, damaged stored indexes, labels with line breaks, a FIFO in a
//! class folder, a user's files in an export folder, control characters in errors, a PNG whose
//! colour profile inflates to 1 GiB, and the server's slow or malformed requests.

use crate::common;
use crate::fixtures;
use crate::support::{request_with, Server};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{cbr, run, run_ok, setup};

/// A folder of 3 classes x 4 colour photos.
fn photo_folder(dir: &Path) -> PathBuf {
    let root = dir.join("photos");
    for class in ["cat", "coffee", "rocket"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..4 {
            let name = format!("{i:02}.jpg");
            std::fs::copy(fixtures::scenes().join(class).join(&name), root.join(class).join(&name))
                .unwrap();
        }
    }
    root
}

/// A model built once for the whole file (f32 and int8 rows), in a folder kept until exit.
fn models() -> &'static (PathBuf, PathBuf, PathBuf) {
    static MODELS: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    MODELS.get_or_init(|| {
        setup();
        let dir = tempfile::tempdir().unwrap().keep();
        let photos = photo_folder(&dir);
        let f32 = dir.join("m.onnx");
        let int8 = dir.join("m8.onnx");
        run_ok(&["build", photos.to_str().unwrap(), "-o", f32.to_str().unwrap(), "-q"]);
        run_ok(&[
            "build",
            photos.to_str().unwrap(),
            "-o",
            int8.to_str().unwrap(),
            "-q",
            "--index-dtype",
            "int8",
        ]);
        (photos, f32, int8)
    })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `cbr args` failed with exit status 1 (not a panic's 101) and said `want`.
fn fails_with(args: &[&str], want: &str) -> String {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "cbr {}: {err}", args.join(" "));
    assert!(err.contains(want), "cbr {}: {err:?} does not say {want:?}", args.join(" "));
    err
}

/// `model` with its ONNX protobuf changed by `change`, written to `out`.
fn tampered(model: &Path, out: &Path, change: impl FnOnce(&mut cbr_core::onnx::ModelProto)) {
    let mut m = cbr_core::onnx::decode(&std::fs::read(model).unwrap()).unwrap();
    change(&mut m);
    std::fs::write(out, cbr_core::onnx::encode(&m)).unwrap();
}

fn initializer<'a>(
    m: &'a mut cbr_core::onnx::ModelProto,
    name: &str,
) -> &'a mut cbr_core::onnx::TensorProto {
    let g = m.graph.as_mut().unwrap();
    g.initializer.iter_mut().find(|t| t.name.as_deref() == Some(name)).unwrap()
}

fn set_metadata(m: &mut cbr_core::onnx::ModelProto, pointer: &str, value: serde_json::Value) {
    let key = cbr_core::meta::METADATA_KEY;
    let mut json: serde_json::Value =
        serde_json::from_str(cbr_core::onnx::metadata(m, key).unwrap()).unwrap();
    *json.pointer_mut(pointer).unwrap() = value;
    cbr_core::onnx::set_metadata(m, key, &json.to_string());
}

#[test]
fn build_refuses_options_no_model_can_hold_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.onnx");
    let out_s = out.to_str().unwrap();
    // The input does not even exist: the options are checked first.
    for (flag, value, want) in [
        ("--power", "nan", "--power: it is NaN"),
        ("--power", "inf", "--power: it is inf"),
        ("--power", "0", "--power: it is 0"),
        ("--known-target", "2", "--known-target: it is 2"),
        ("--target-precision", "5", "--target-precision: it is 5"),
        ("--threshold", "nan", "--threshold: it is NaN"),
    ] {
        fails_with(&["build", "no-such-folder", "-o", out_s, flag, value], want);
        assert!(!out.exists(), "{flag} {value} wrote a model");
    }
    let (_, model, _) = models();
    let photo = fixtures::scenes().join("cat/05.jpg");
    fails_with(
        &["classify", model.to_str().unwrap(), photo.to_str().unwrap(), "--threshold", "NaN"],
        "the threshold is NaN",
    );
}

#[test]
fn a_damaged_stored_index_is_refused_by_every_command_and_nothing_is_written() {
    let (photos, model, int8) = models();
    let dir = tempfile::tempdir().unwrap();
    let photo = fixtures::scenes().join("cat/05.jpg");
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        ("nan", model.clone(), "invalid stored tensor cbr/index_embeddings: value 3 is NaN"),
        ("narrow", model.clone(), "cbr/index_embeddings has shape [12, 1000]"),
        ("dim", model.clone(), "describe 12 index rows of 1281 values"),
        ("zero-scales", int8.clone(), "invalid stored tensor cbr/index_scales: scale 0 is 0"),
    ];
    for (what, source, want) in cases {
        let bad = dir.path().join(format!("{what}.onnx"));
        tampered(&source, &bad, |m| match what {
            "nan" => {
                let t = initializer(m, "cbr/index_embeddings");
                t.raw_data.as_mut().unwrap()[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            "narrow" => {
                let t = initializer(m, "cbr/index_embeddings");
                t.dims = vec![12, 1000];
                t.raw_data.as_mut().unwrap().truncate(12 * 1000 * 4);
            }
            "dim" => set_metadata(m, "/embedder/dim", serde_json::json!(1281)),
            _ => {
                let t = initializer(m, "cbr/index_scales");
                t.raw_data = Some(vec![0; 12 * 4]);
                t.float_data.clear();
            }
        });
        let (bad_s, out) = (bad.to_str().unwrap(), dir.path().join(format!("{what}-out.onnx")));
        let out_s = out.to_str().unwrap();
        let site = dir.path().join(format!("{what}-site"));
        fails_with(&["add", bad_s, photos.to_str().unwrap(), "-o", out_s, "-q"], want);
        fails_with(&["remove", bad_s, "--label", "cat", "-o", out_s], want);
        fails_with(&["relabel", bad_s, "cat", "kitten", "-o", out_s], want);
        fails_with(&["info", bad_s], want);
        fails_with(&["classify", bad_s, photo.to_str().unwrap()], want);
        fails_with(&["export-web", bad_s, "-o", site.to_str().unwrap()], want);
        assert!(!out.exists() && !site.exists(), "{what}: something was written");
    }
}

#[test]
fn labels_with_line_breaks_never_reach_a_model() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let photos = photo_folder(dir.path());
    let out = dir.path().join("m.onnx");
    // A folder name with a line break (as a .tflite, MediaPipe refused the labelmap.txt it made).
    std::fs::rename(photos.join("coffee"), photos.join("cof\nfee")).unwrap();
    let err = fails_with(
        &["build", photos.to_str().unwrap(), "-o", out.to_str().unwrap(), "-q"],
        "holds a line break",
    );
    assert!(err.contains("cof\\nfee") && !err.contains("cof\nfee"), "{err:?}");
    std::fs::rename(photos.join("cof\nfee"), photos.join("coffee")).unwrap();
    // A quoted CSV label with CR LF.
    let csv = dir.path().join("m.csv");
    let mut text = String::from("path,label\n");
    for (i, class) in ["cat", "coffee"].iter().enumerate() {
        for f in 0..2 {
            let label = if i == 0 { "\"two\r\nlines\"".to_string() } else { class.to_string() };
            text.push_str(&format!(
                "{},{label}\n",
                photos.join(class).join(format!("0{f}.jpg")).display()
            ));
        }
    }
    std::fs::write(&csv, text).unwrap();
    fails_with(
        &["build", csv.to_str().unwrap(), "-o", out.to_str().unwrap(), "-q"],
        "the label two\\r\\nlines holds a line break",
    );
    assert!(!out.exists());
    // Relabel to such a name.
    let (_, model, _) = models();
    let o = dir.path().join("r.onnx");
    fails_with(
        &["relabel", model.to_str().unwrap(), "cat", "a\nb", "-o", o.to_str().unwrap()],
        "holds a line break",
    );
    assert!(!o.exists());
}

#[test]
fn a_fifo_in_a_class_folder_is_skipped_not_waited_for() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let photos = photo_folder(dir.path());
    let fifo = photos.join("cat/p.jpg");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = dir.path().join("m.onnx");
    let run_bounded = |args: &[&str]| -> Output {
        let mut child =
            cbr().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("cbr {} hangs on a FIFO", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    };
    let o = run_bounded(&["build", photos.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("p.jpg: cannot read file: not a regular file"), "{}", stderr(&o));
    let o = run_bounded(&["check", photos.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_bounded(&["classify", out.to_str().unwrap(), fifo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("p.jpg: cannot read file: not a regular file"), "{o:?}");
}

#[test]
fn export_web_keeps_a_users_files() {
    let (_, model, _) = models();
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("w");
    let args = ["export-web", model.to_str().unwrap(), "-o", site.to_str().unwrap()];
    run_ok(&args);
    run_ok(&args); // an export of its own is replaced
    std::fs::write(site.join("NOTES.txt"), "x\n").unwrap();
    std::fs::create_dir(site.join("photos")).unwrap();
    fails_with(&args, "NOTES.txt, photos/");
    assert_eq!(std::fs::read_to_string(site.join("NOTES.txt")).unwrap(), "x\n");
    assert!(site.join("photos").is_dir());
}

#[test]
fn control_characters_in_errors_are_escaped() {
    let (_, model, _) = models();
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("a\u{1b}[2J\nerror: forged.onnx");
    let evil_s = evil.to_str().unwrap();
    let photo = fixtures::scenes().join("cat/05.jpg");
    // Outputs inside the temporary folder: an edit's lock file goes beside its output.
    let (x, y) = (dir.path().join("x.onnx"), dir.path().join("y.onnx"));
    for args in [
        vec!["info", evil_s],
        vec!["classify", evil_s, photo.to_str().unwrap()],
        vec!["add", evil_s, evil_s],
        vec!["build", evil_s, "-o", x.to_str().unwrap()],
        vec!["check", evil_s],
        vec![
            "remove",
            model.to_str().unwrap(),
            "--label",
            "no\u{1b}[31m",
            "-o",
            y.to_str().unwrap(),
        ],
    ] {
        let o = run(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains('\u{1b}'), "{args:?}: a raw escape reached the terminal: {err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: a forged line: {err:?}");
    }
    // A rename says nothing of removed rows when none were.
    let out = dir.path().join("r.onnx");
    let o =
        run(&["relabel", model.to_str().unwrap(), "cat", "kitten", "-o", out.to_str().unwrap()]);
    assert!(o.status.success() && !stderr(&o).contains("removed 0"), "{}", stderr(&o));
}

/// Peak resident memory (kB) of `cbr args`, from the kernel's accounting of the child.
// The child is reaped by wait4 (which std's `wait` cannot do: it gives no rusage).
#[allow(clippy::zombie_processes)]
fn peak_rss_kb(args: &[&str]) -> (i64, bool) {
    let child = cbr().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid for writes for the duration of the call.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    (usage.ru_maxrss, libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
}

/// A 64x64 PNG with an iCCP chunk whose profile inflates to 1 GiB (about 1 MB on disk).
fn png_bomb(path: &Path) {
    let img = image::RgbImage::from_pixel(64, 64, image::Rgb([200, 30, 30]));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        z.write_all(&zeros).unwrap();
    }
    let mut data = b"bomb\0\0".to_vec();
    data.extend_from_slice(&z.finish().unwrap());
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(b"iCCP");
    chunk.extend_from_slice(&data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(b"iCCP");
    crc.update(&data);
    chunk.extend_from_slice(&crc.finalize().to_be_bytes());
    std::fs::write(path, [&png[..33], &chunk[..], &png[33..]].concat()).unwrap();
}

#[test]
fn a_png_colour_profile_bomb_stays_bounded() {
    let (_, model, _) = models();
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.png");
    png_bomb(&bomb);
    let normal = fixtures::scenes().join("cat/05.jpg");
    let m = model.to_str().unwrap();
    let (base, ok) = peak_rss_kb(&["classify", m, normal.to_str().unwrap()]);
    assert!(ok);
    let (peak, ok) = peak_rss_kb(&["classify", m, bomb.to_str().unwrap()]);
    assert!(ok, "the bomb's pixels are a valid image: classified");
    // Was 937 MB (the profile inflated in full) for 89 MB with a normal photo.
    assert!(
        peak < base + 100 * 1024,
        "classify of the PNG bomb peaked at {peak} kB ({base} kB for a photo)"
    );
}

/// Reads whatever `s` sends until it closes (or `limit` passes): the bytes, and whether it closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

fn json_of(raw: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{text:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}")))
}

#[test]
fn serve_bounds_slow_requests_and_answers_malformed_ones_in_json() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--read-timeout", "2"]);
    let addr = server.addr;
    // Half a request line, and nothing at all: closed after the header timeout.
    for sent in [&b"GET /api/mod"[..], b""] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(sent).unwrap();
        let start = Instant::now();
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(30));
        assert!(closed, "a connection that sent {sent:?} is still open after 30 s");
        assert!(start.elapsed() < Duration::from_secs(10), "closed after {:?}", start.elapsed());
    }
    // A malformed request line, a 100,000-character path, a bad chunk-size line.
    let raw = |request: &[u8]| -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request).unwrap();
        read_until_closed(&mut s, Duration::from_secs(20)).0
    };
    let (status, v) = json_of(&raw(b"GARBAGE\r\n\r\n"));
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v}");
    let long = format!("GET /{} HTTP/1.1\r\nHost: {addr}\r\n\r\n", "a".repeat(100_000));
    let (status, v) = json_of(&raw(long.as_bytes()));
    assert_eq!((status, v["error"]["code"].as_str()), (414, Some("uri_too_long")), "{v}");
    let r = request_with(
        addr,
        "POST",
        "/api/models",
        &[("Content-Type", "application/json")],
        b"{\"name\":\"m\"}",
    );
    assert!(r.status < 300, "{}", r.text());
    let chunked = format!(
        "POST /api/models/m/classify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/jpeg\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz-not-hex\r\nabc\r\n0\r\n\r\n"
    );
    let (status, v) = json_of(&raw(chunked.as_bytes()));
    assert_eq!(status, 400, "{v}");
    // Two Host or two Origin headers; an https Origin on this plain-HTTP port.
    let host = addr.to_string();
    let own = format!("http://{addr}");
    for headers in [
        vec![("Host", host.as_str()), ("Host", "evil.example")],
        vec![("Origin", own.as_str()), ("Origin", "http://evil.example")],
    ] {
        let r = request_with(addr, "POST", "/api/models", &headers, b"{\"name\":\"n\"}");
        assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, "duplicate_header".into()));
    }
    let https = format!("https://{addr}");
    let r = request_with(
        addr,
        "POST",
        "/api/models",
        &[("Origin", https.as_str())],
        b"{\"name\":\"n\"}",
    );
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (403, "origin_not_allowed".into()));
    // The app may not be framed by another site.
    let r = request_with(addr, "GET", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(r
        .header("content-security-policy")
        .is_some_and(|v| v.contains("frame-ancestors 'none'")));
}
