//! Hostile input against a server holding real work, each request answered with a 4xx and
//! the store byte-for-byte unchanged: the whole store is dumped before the barrage and
//! compared after *every* request, so a request that wrote anything is named.
//!
//! The barrage follows the reliability issue's list: malformed JSON, wrong types, missing
//! and unknown fields, huge and deeply nested bodies, invalid UTF-8, unknown and malformed
//! ids, path traversal in procedure names, a task id where an instance id belongs (and the
//! reverse), acting without the step's role, replayed commands, oversized forms and
//! comments, and a condition that fails at run time (`tests/fixtures/runtime/guard-error.toml`
//! divides by a form value). The last test proves the comparison can fail: one accepted
//! command changes the dump.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;

/// The work the barrage runs against.
struct Scene {
    /// A complaint waiting at `resolve_general`, claimed by he.ping (sales).
    open: String,
    open_task: String,
    /// A complaint driven to its end; its `register` task is closed.
    done: String,
    done_task: String,
    /// A `guard-error` instance waiting at `count`.
    guarded_task: String,
}

async fn scene(srv: &Server) -> Scene {
    let open = srv.start_complaint("xu.na").await;
    let open = srv
        .complete_step(&open, "register", "xu.na", None, registration("general"))
        .await;
    let open_task = task_at(&open, "resolve_general");
    srv.post_expect(
        "he.ping",
        &format!("/v1/tasks/{open_task}/claim"),
        json!({}),
        StatusCode::OK,
    )
    .await;

    let done = srv.start_complaint("xu.na").await;
    let done_task = task_at(&done, "register");
    let d = srv
        .complete_step(&done, "register", "xu.na", None, registration("general"))
        .await;
    let d = srv
        .complete_step(&d, "resolve_general", "he.ping", None, resolution())
        .await;
    let d = srv
        .complete_step(
            &d,
            "follow_up_visit",
            "gao.yan",
            None,
            json!({ "customer_satisfied": true, "satisfaction_score": 100, "customer_evaluation": "Good" }),
        )
        .await;
    assert_eq!(d["status"], "completed");

    let guarded = srv
        .start_instance("liu.yang", "guard-error", json!({}))
        .await;
    Scene {
        open: id_of(&open),
        open_task,
        done: id_of(&d),
        done_task,
        guarded_task: task_at(&guarded, "count"),
    }
}

/// One hostile request and the statuses it may get.
struct Case {
    what: String,
    method: Method,
    path: String,
    auth: Auth<'static>,
    body: Body,
    want: &'static [u16],
}

fn json_case(
    what: &str,
    path: String,
    user: &'static str,
    body: Value,
    want: &'static [u16],
) -> Case {
    Case {
        what: what.into(),
        method: Method::POST,
        path,
        auth: Auth::User(user),
        body: Body::Json(body),
        want,
    }
}

fn raw_case(
    what: &str,
    path: String,
    user: &'static str,
    bytes: Vec<u8>,
    want: &'static [u16],
) -> Case {
    Case {
        what: what.into(),
        method: Method::POST,
        path,
        auth: Auth::User(user),
        body: Body::Raw(Some("application/json"), bytes),
        want,
    }
}

fn get_case(what: &str, path: String, user: &'static str, want: &'static [u16]) -> Case {
    Case {
        what: what.into(),
        method: Method::GET,
        path,
        auth: Auth::User(user),
        body: Body::Empty,
        want,
    }
}

/// 400 or 422: a body that parses as JSON but does not fit the request type is refused
/// either way, depending on where it fails; what matters here is that it is a 4xx.
const BAD: &[u16] = &[400, 422];

fn cases(s: &Scene) -> Vec<Case> {
    let start = "/v1/instances".to_string();
    let complete = format!("/v1/tasks/{}/complete", s.open_task);
    let delegate = format!("/v1/tasks/{}/delegate", s.open_task);
    let cancel = format!("/v1/instances/{}/cancel", s.open);
    let comment = format!("/v1/instances/{}/comments", s.open);
    let clock = "/v1/admin/clock/advance".to_string();
    let unknown = uuid::Uuid::now_v7();
    let mut c = vec![
        // Malformed JSON, on every write.
        raw_case(
            "truncated start",
            start.clone(),
            "xu.na",
            br#"{"procedure": "complaint-handling", "data": {"#.to_vec(),
            &[400],
        ),
        raw_case(
            "truncated completion",
            complete.clone(),
            "he.ping",
            br#"{"outcome":"#.to_vec(),
            &[400],
        ),
        raw_case(
            "not JSON",
            cancel.clone(),
            "qian.li",
            b"cancel it please".to_vec(),
            &[400],
        ),
        raw_case(
            "unclosed comment",
            comment.clone(),
            "he.ping",
            br#"{"text": "a""#.to_vec(),
            &[400],
        ),
        raw_case(
            "lone bracket",
            delegate.clone(),
            "he.ping",
            b"[".to_vec(),
            &[400],
        ),
        raw_case(
            "truncated clock move",
            clock.clone(),
            ADMIN,
            b"{".to_vec(),
            &[400],
        ),
        raw_case("empty body", start.clone(), "xu.na", Vec::new(), &[400]),
        raw_case(
            "JSON array, not an object",
            start.clone(),
            "xu.na",
            b"[1,2,3]".to_vec(),
            BAD,
        ),
        raw_case(
            "trailing garbage",
            start.clone(),
            "xu.na",
            br#"{"procedure":"complaint-handling","data":{}} trailing"#.to_vec(),
            &[400],
        ),
        // Wrong types.
        json_case(
            "procedure as a number",
            start.clone(),
            "xu.na",
            json!({ "procedure": 5, "data": {} }),
            BAD,
        ),
        json_case(
            "data as a list",
            start.clone(),
            "xu.na",
            json!({ "procedure": "complaint-handling", "data": [] }),
            BAD,
        ),
        json_case(
            "form values of the wrong type",
            start.clone(),
            "xu.na",
            json!({ "procedure": "complaint-handling", "data": { "customer": 5, "contact": true } }),
            &[422],
        ),
        json_case(
            "form as text",
            complete.clone(),
            "he.ping",
            json!({ "form": "done" }),
            BAD,
        ),
        json_case(
            "outcome as a number",
            complete.clone(),
            "he.ping",
            json!({ "outcome": 3, "form": {} }),
            BAD,
        ),
        json_case(
            "delegate to a number",
            delegate.clone(),
            "he.ping",
            json!({ "to": 7, "reason": "x" }),
            BAD,
        ),
        json_case(
            "reason as a list",
            cancel.clone(),
            "qian.li",
            json!({ "reason": ["x"] }),
            BAD,
        ),
        json_case(
            "comment text null",
            comment.clone(),
            "he.ping",
            json!({ "text": null }),
            BAD,
        ),
        json_case(
            "clock move by a number",
            clock.clone(),
            ADMIN,
            json!({ "by": 5 }),
            BAD,
        ),
        json_case(
            "clock move to nonsense",
            clock.clone(),
            ADMIN,
            json!({ "by": "a fortnight-ish" }),
            BAD,
        ),
        json_case(
            "clock move backwards",
            clock.clone(),
            ADMIN,
            json!({ "to": "2020-01-01T00:00:00Z" }),
            BAD,
        ),
        // Missing fields.
        json_case(
            "start without anything",
            start.clone(),
            "xu.na",
            json!({}),
            BAD,
        ),
        json_case(
            "start without a procedure",
            start.clone(),
            "xu.na",
            json!({ "data": {} }),
            BAD,
        ),
        json_case(
            "start without required data",
            start.clone(),
            "xu.na",
            json!({ "procedure": "complaint-handling", "data": {} }),
            &[422],
        ),
        json_case(
            "completion without its form",
            complete.clone(),
            "he.ping",
            json!({}),
            BAD,
        ),
        json_case(
            "cancel without a reason",
            cancel.clone(),
            "qian.li",
            json!({}),
            BAD,
        ),
        json_case(
            "cancel with a blank reason",
            cancel.clone(),
            "qian.li",
            json!({ "reason": "  " }),
            BAD,
        ),
        json_case(
            "delegate to nobody",
            delegate.clone(),
            "he.ping",
            json!({}),
            BAD,
        ),
        json_case(
            "comment without text",
            comment.clone(),
            "he.ping",
            json!({}),
            BAD,
        ),
        json_case(
            "blank comment",
            comment.clone(),
            "he.ping",
            json!({ "text": " \n " }),
            BAD,
        ),
        // Unknown fields.
        json_case(
            "unknown field in a start",
            start.clone(),
            "xu.na",
            json!({ "procedure": "complaint-handling", "data": {}, "priority": "high" }),
            BAD,
        ),
        json_case(
            "unknown field in a completion",
            complete.clone(),
            "he.ping",
            json!({ "form": resolution(), "signed_by": "zhao.gang" }),
            BAD,
        ),
        json_case(
            "unknown form field",
            complete.clone(),
            "he.ping",
            json!({ "form": { "resolution_plan": "x", "bribe": 100 } }),
            &[422],
        ),
        json_case(
            "unknown field in a cancel",
            cancel.clone(),
            "qian.li",
            json!({ "reason": "x", "force": true }),
            BAD,
        ),
        // Huge and deep.
        raw_case(
            "JSON nested past the parser's depth",
            start.clone(),
            "xu.na",
            deep_start(100_000),
            &[400],
        ),
        json_case(
            "a form nested a hundred deep",
            start.clone(),
            "xu.na",
            json!({ "procedure": "complaint-handling", "data": nested(100) }),
            &[422],
        ),
        json_case(
            "a form over 64 KiB",
            start.clone(),
            "xu.na",
            json!({ "procedure": "complaint-handling", "data": { "customer": "x".repeat(70 * 1024), "contact": "Mr Li" } }),
            &[422],
        ),
        json_case(
            "a comment over 8000 characters",
            comment.clone(),
            "he.ping",
            json!({ "text": "x".repeat(8001) }),
            &[422],
        ),
        json_case(
            "a cancel reason over 8000 characters",
            cancel.clone(),
            "qian.li",
            json!({ "reason": "x".repeat(8001) }),
            &[422],
        ),
        // Invalid UTF-8.
        raw_case(
            "invalid UTF-8 in a procedure name",
            start.clone(),
            "xu.na",
            b"{\"procedure\":\"\xff\xfe\",\"data\":{}}".to_vec(),
            &[400],
        ),
        raw_case(
            "invalid UTF-8 in a comment",
            comment.clone(),
            "he.ping",
            b"{\"text\":\"ok \xc3\x28\"}".to_vec(),
            &[400],
        ),
        raw_case(
            "a lone surrogate escape",
            comment.clone(),
            "he.ping",
            br#"{"text":"\ud800"}"#.to_vec(),
            &[400],
        ),
        // Unknown and malformed ids.
        get_case(
            "a malformed instance id",
            "/v1/instances/not-a-uuid".into(),
            ADMIN,
            &[400, 404],
        ),
        get_case(
            "an unknown instance",
            format!("/v1/instances/{unknown}"),
            ADMIN,
            &[404],
        ),
        get_case(
            "an unknown instance's history",
            format!("/v1/instances/{unknown}/history"),
            ADMIN,
            &[404],
        ),
        json_case(
            "completing an unknown task",
            format!("/v1/tasks/{unknown}/complete"),
            "he.ping",
            json!({ "form": resolution() }),
            &[404],
        ),
        json_case(
            "claiming a malformed task id",
            "/v1/tasks/xyz/claim".into(),
            "he.ping",
            json!({}),
            &[400, 404],
        ),
        json_case(
            "cancelling an unknown instance",
            format!("/v1/instances/{unknown}/cancel"),
            "qian.li",
            json!({ "reason": "x" }),
            &[404],
        ),
        json_case(
            "commenting on an unknown instance",
            format!("/v1/instances/{unknown}/comments"),
            ADMIN,
            json!({ "text": "x" }),
            &[404],
        ),
        json_case(
            "a task id of 37 hex digits",
            format!("/v1/tasks/{}0/complete", unknown.simple()),
            "he.ping",
            json!({ "form": {} }),
            &[400, 404],
        ),
        // A task id where an instance id belongs, and the reverse.
        get_case(
            "an instance id as a task",
            format!("/v1/tasks/{}", s.open),
            "he.ping",
            &[404],
        ),
        json_case(
            "completing an instance id",
            format!("/v1/tasks/{}/complete", s.open),
            "he.ping",
            json!({ "form": resolution() }),
            &[404],
        ),
        json_case(
            "cancelling a task id",
            format!("/v1/instances/{}/cancel", s.open_task),
            "qian.li",
            json!({ "reason": "x" }),
            &[404],
        ),
        json_case(
            "commenting on a task id",
            format!("/v1/instances/{}/comments", s.open_task),
            ADMIN,
            json!({ "text": "x" }),
            &[404],
        ),
        // Path traversal in procedure names.
        get_case(
            "a procedure name climbing out",
            "/v1/procedures/..%2F..%2Forg".into(),
            "xu.na",
            &[400, 404],
        ),
        get_case(
            "a dotted procedure name",
            "/v1/procedures/%2e%2e%2f%2e%2e%2fetc%2fpasswd/graph".into(),
            "xu.na",
            &[400, 404],
        ),
        json_case(
            "starting a path",
            start.clone(),
            "xu.na",
            json!({ "procedure": "../../org", "data": {} }),
            &[400, 404, 422],
        ),
        json_case(
            "starting an absolute path",
            start.clone(),
            "xu.na",
            json!({ "procedure": "/etc/passwd", "data": {} }),
            &[400, 404, 422],
        ),
        json_case(
            "validating under a path",
            "/v1/procedures/validate".into(),
            "qian.li",
            json!({ "text": "id = \"x\"", "name": "../../org.toml" }),
            &[400],
        ),
        // Without the step's role, or the right to act at all.
        json_case(
            "completing without the step's role",
            complete.clone(),
            "xu.na",
            json!({ "form": resolution() }),
            &[403],
        ),
        json_case(
            "completing the guarded step without its role",
            format!("/v1/tasks/{}/complete", s.guarded_task),
            "xu.na",
            json!({ "form": { "total": 1, "boxes": 1 } }),
            &[403],
        ),
        json_case(
            "cancelling without a cancel role",
            cancel.clone(),
            "xu.na",
            json!({ "reason": "x" }),
            &[403],
        ),
        json_case(
            "an auditor cancelling",
            cancel.clone(),
            AUDITOR,
            json!({ "reason": "x" }),
            &[403],
        ),
        json_case(
            "an auditor commenting",
            comment.clone(),
            AUDITOR,
            json!({ "text": "x" }),
            &[403],
        ),
        json_case(
            "staff moving the clock",
            clock.clone(),
            "xu.na",
            json!({ "by": "PT1H" }),
            &[403],
        ),
        json_case(
            "starting without a start role",
            start.clone(),
            "zhao.gang",
            json!({ "procedure": "complaint-handling", "data": complaint_data() }),
            &[403],
        ),
        json_case(
            "delegating to someone without the role",
            format!("/v1/tasks/{}/delegate", s.open_task),
            "he.ping",
            json!({ "to": "xu.na", "reason": "x" }),
            &[403],
        ),
        // Replays and lost races.
        json_case(
            "completing a closed task again",
            format!("/v1/tasks/{}/complete", s.done_task),
            "xu.na",
            json!({ "form": registration("general") }),
            &[409],
        ),
        json_case(
            "claiming a closed task",
            format!("/v1/tasks/{}/claim", s.done_task),
            "xu.na",
            json!({}),
            &[409],
        ),
        json_case(
            "cancelling an ended instance",
            format!("/v1/instances/{}/cancel", s.done),
            "qian.li",
            json!({ "reason": "x" }),
            &[409],
        ),
        json_case(
            "claiming a task one holds",
            format!("/v1/tasks/{}/claim", s.open_task),
            "he.ping",
            json!({}),
            &[409],
        ),
        json_case(
            "claiming a task another holds",
            format!("/v1/tasks/{}/claim", s.open_task),
            "liu.yang",
            json!({}),
            &[409],
        ),
        json_case(
            "completing a task another holds",
            complete.clone(),
            "liu.yang",
            json!({ "form": resolution() }),
            &[409],
        ),
        json_case(
            "releasing a task another holds",
            format!("/v1/tasks/{}/release", s.open_task),
            "liu.yang",
            json!({}),
            &[409],
        ),
        // A condition that fails when it runs.
        json_case(
            "a guard dividing by zero",
            format!("/v1/tasks/{}/complete", s.guarded_task),
            "liu.yang",
            json!({ "form": { "total": 10, "boxes": 0 } }),
            &[422],
        ),
        // Wrong methods and media types.
        Case {
            what: "deleting an instance".into(),
            method: Method::DELETE,
            path: format!("/v1/instances/{}", s.open),
            auth: Auth::User(ADMIN),
            body: Body::Empty,
            want: &[405],
        },
        Case {
            what: "a start as form data".into(),
            method: Method::POST,
            path: start.clone(),
            auth: Auth::User("xu.na"),
            body: Body::Raw(
                Some("application/x-www-form-urlencoded"),
                b"procedure=complaint-handling".to_vec(),
            ),
            want: &[415],
        },
    ];
    // Who is asking: nobody, a wrong token, an inactive user.
    for (what, auth) in [
        ("no token", Auth::None),
        ("a wrong token", Auth::Header("Bearer sfk_not-a-token")),
        ("a malformed header", Auth::Header("Basic eHU6bmE=")),
    ] {
        c.push(Case {
            what: format!("a start with {what}"),
            method: Method::POST,
            path: start.clone(),
            auth,
            body: Body::Json(
                json!({ "procedure": "complaint-handling", "data": complaint_data() }),
            ),
            want: &[401],
        });
    }
    c.push(json_case(
        "a start by an inactive user",
        start,
        "shi.lan",
        json!({ "procedure": "complaint-handling", "data": complaint_data() }),
        &[401],
    ));
    c
}

/// A syntactically valid start request of about `bytes` bytes.
fn huge_start(bytes: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "procedure": "complaint-handling",
        "data": { "customer": "x".repeat(bytes), "contact": "Mr Li" }
    }))
    .expect("JSON")
}

/// `{"procedure":…,"data":{"a":{"a":…}}}` nested `depth` deep (well inside the body limit).
fn deep_start(depth: usize) -> Vec<u8> {
    let mut s = String::from(r#"{"procedure":"complaint-handling","data":"#);
    s.push_str(&r#"{"a":"#.repeat(depth));
    s.push('1');
    s.push_str(&"}".repeat(depth));
    s.push('}');
    s.into_bytes()
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |v, _| json!({ "a": v }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_leave_the_store_unchanged() {
    let (srv, _procs) = Server::start_with_fixtures(&["guard-error.toml"]).await;
    let s = scene(&srv).await;
    let before = srv.dump();
    let cases = cases(&s);
    assert!(cases.len() > 70, "the barrage shrank to {}", cases.len());
    // A body over the limit: 413, or the connection closed under the upload (see
    // `post_oversized`); nothing is written either way.
    let r = srv
        .post_oversized("/v1/instances", "xu.na", huge_start(2 << 20))
        .await;
    assert!(
        matches!(r, None | Some(StatusCode::PAYLOAD_TOO_LARGE)),
        "{r:?}"
    );
    assert!(
        srv.dump() == before,
        "the store changed after an oversized start"
    );
    for case in cases {
        // `send` checks no 5xx, a request id and a problem body for every 4xx.
        let r = srv
            .send(case.method.clone(), &case.path, case.auth, case.body, &[])
            .await;
        assert!(
            case.want.contains(&r.status.as_u16()),
            "{}: {} {} answered {} (wanted one of {:?}): {}",
            case.what,
            case.method,
            case.path,
            r.status,
            case.want,
            r.text()
        );
        assert!(
            srv.dump() == before,
            "{}: the store changed after a refused {} {}",
            case.what,
            case.method,
            case.path
        );
    }
}

/// The dump comparison above is not vacuous: one accepted comment changes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_accepted_command_changes_the_dump() {
    let (srv, _procs) = Server::start_with_fixtures(&["guard-error.toml"]).await;
    let s = scene(&srv).await;
    let before = srv.dump();
    srv.post_expect(
        "he.ping",
        &format!("/v1/instances/{}/comments", s.open),
        json!({ "text": "called the customer" }),
        StatusCode::CREATED,
    )
    .await;
    assert!(srv.dump() != before);
    // And the guard works once the value allows it.
    let (status, v) = srv
        .post(
            "liu.yang",
            &format!("/v1/tasks/{}/complete", s.guarded_task),
            json!({ "form": { "total": 100, "boxes": 4 } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(open_steps(&v), vec!["check_large_boxes".to_string()]);
}
