//! Every JSON body the handlers send validates against the schema
//! `/openapi.json` declares for it (the schemas are generated from the
//! handlers' types, and this checks the generation and the 3.0 rewrite end to
//! end). The server runs in-process on loopback; no runtime or model needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::{json, Value};

use super::*;

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, ctype: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply { status, body: out[split + 4..].to_vec() }
}

/// Checks `v` against an OpenAPI 3.0 schema (the parts the document uses),
/// strictly: a property the schema does not declare is an error too.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: dangling $ref {r}"));
        }
        return validate(doc, target, v, at);
    }
    if v.is_null() && schema.get("nullable") == Some(&json!(true)) {
        return Ok(());
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(doc, s, v, at)?;
        }
        return Ok(());
    }
    if let Some(any) = schema.get("oneOf").and_then(Value::as_array) {
        let ok = any.iter().filter(|s| validate(doc, s, v, at).is_ok()).count();
        return if ok == 1 { Ok(()) } else { Err(format!("{at}: {v} matches {ok} of oneOf")) };
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let fits = match ty {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(t) => return Err(format!("{at}: the schema has an unknown type {t}")),
    };
    if !fits {
        return Err(format!("{at}: {v} is not of type {}", ty.unwrap()));
    }
    if let (Some(o), Some(props)) =
        (v.as_object(), schema.get("properties").and_then(Value::as_object))
    {
        for req in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let k = req.as_str().unwrap();
            if !o.contains_key(k) {
                return Err(format!("{at}: required {k} is missing"));
            }
        }
        for (k, x) in o {
            let s = props
                .get(k)
                .ok_or_else(|| format!("{at}: {k} is sent but the schema does not declare it"))?;
            validate(doc, s, x, &format!("{at}.{k}"))?;
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, x) in a.iter().enumerate() {
            validate(doc, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The schema of `method path`'s answer with `status`.
fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    let r = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(!r.is_null(), "{method} {path} documents no JSON body for {status}");
    r
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 12, |x, y| image::Rgb([x as u8 * 9, y as u8 * 11, 77]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn multipart(file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "cbr-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// (method, route path, concrete path, content type, body, expected status)
type Call<'a> = (&'a str, &'a str, String, &'a str, Vec<u8>, u16);

#[test]
fn every_json_response_validates_against_its_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Config { models_dir: tmp.path().join("models"), ..Config::default() };
    let store = Store::open(&cfg.models_dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    let rt = rt.unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let access = guard::Access {
        allow_hosts: Vec::new(),
        allow_origins: Vec::new(),
        token: None,
        port: addr.port(),
    };
    let app = Arc::new(App::new(cfg, store, Arc::new(access)));
    rt.spawn(async move { axum::serve(listener, router(app)).await });

    let doc = request(addr, "GET", "/openapi.json", "text/plain", b"").json();
    assert_eq!(doc, openapi(), "the served document is the generated one");
    let (ctype, upload) = multipart(&png());
    let m = "/api/models/{model}";
    let img = "/api/models/{model}/labels/{label}/images/{image}";
    let calls: Vec<Call> = vec![
        ("GET", "/api/health", "/api/health".into(), "", vec![], 200),
        (
            "POST",
            "/api/models",
            "/api/models".into(),
            "application/json",
            br#"{"name":"m"}"#.to_vec(),
            201,
        ),
        (
            "POST",
            "/api/models",
            "/api/models".into(),
            "application/json",
            br#"{"name":"m"}"#.to_vec(),
            409,
        ),
        (
            "POST",
            "/api/models/{model}/labels",
            "/api/models/m/labels".into(),
            "application/json",
            br#"{"name":"a"}"#.to_vec(),
            201,
        ),
        (
            "POST",
            "/api/models/{model}/labels/{label}/images",
            "/api/models/m/labels/b/images".into(),
            &ctype,
            upload.clone(),
            201,
        ),
        ("GET", "/api/models", "/api/models".into(), "", vec![], 200),
        ("GET", m, "/api/models/m".into(), "", vec![], 200),
        ("GET", "/api/models/{model}/build", "/api/models/m/build".into(), "", vec![], 200),
        ("GET", "/api/models/{model}/info", "/api/models/m/info".into(), "", vec![], 409),
        ("GET", m, "/api/models/nope".into(), "", vec![], 404),
        (
            "DELETE",
            "/api/models/{model}/labels/{label}",
            "/api/models/m/labels/a".into(),
            "",
            vec![],
            200,
        ),
    ];
    for (method, route, path, ctype, body, want) in calls {
        let r = request(addr, method, &path, ctype, &body);
        assert_eq!(r.status, want, "{method} {path}: {}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        let schema = response_schema(&doc, method, route, r.status);
        validate(&doc, schema, &v, "body").unwrap_or_else(|e| {
            panic!("{method} {path} ({}) does not match its schema: {e}\n{v}", r.status)
        });
    }
    // The image uploaded above, then deleted by its id.
    let model = request(addr, "GET", "/api/models/m", "", b"").json();
    let id = model["labels"][0]["images"][0].as_str().unwrap().to_string();
    let r = request(addr, "DELETE", &format!("/api/models/m/labels/b/images/{id}"), "", b"");
    validate(&doc, response_schema(&doc, "DELETE", img, r.status), &r.json(), "body").unwrap();
    let r = request(addr, "DELETE", "/api/models/m", "", b"");
    validate(&doc, response_schema(&doc, "DELETE", m, r.status), &r.json(), "body").unwrap();

    // The check itself catches drift: the old hand-written Added schema's
    // extra field is fine (not required) but a body with an undeclared field,
    // a wrong type or a missing required field is not.
    let added = &doc["components"]["schemas"]["Added"];
    assert!(validate(&doc, added, &json!({"added": ["x"], "count": 1}), "b").is_ok());
    assert!(validate(&doc, added, &json!({"added": ["x"], "count": 1, "label": "a"}), "b").is_err());
    assert!(validate(&doc, added, &json!({"added": "x", "count": 1}), "b").is_err());
    assert!(validate(&doc, added, &json!({"added": ["x"]}), "b").is_err());
    rt.shutdown_background();
}
