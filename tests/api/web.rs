//! The web app over HTTP, as a browser without JavaScript uses it: signing in, the session
//! cookie's flags, the security headers, CSRF, escaping, the same refusals as the API with
//! nothing changed, a refused form shown again with its problems and what was typed, and
//! the auditor's downloads. (The journeys in a real browser are `scripts/browser-test.sh`.)

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Server, ADMIN};

/// A browser session against the server: a cookie jar of one cookie, no redirects followed.
struct Browser<'a> {
    srv: &'a Server,
    client: reqwest::Client,
    cookie: Option<String>,
    csrf: String,
}

struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> String {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

impl<'a> Browser<'a> {
    fn new(srv: &'a Server) -> Self {
        Browser {
            srv,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client"),
            cookie: None,
            csrf: String::new(),
        }
    }

    async fn signed_in(srv: &'a Server, user: &str) -> Self {
        let mut b = Browser::new(srv);
        let r = b.post_raw("/sign-in", &[("token", srv.token(user))]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert_eq!(r.location(), "/tasks");
        let set = r
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a session cookie")
            .to_string();
        b.cookie = Some(set.split(';').next().unwrap_or_default().to_string());
        let page = b.get("/tasks").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        b.csrf = between(&page.body, "name=\"_csrf\" value=\"", "\"").expect("a CSRF token");
        b
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let res = req.send().await.expect("a reply");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.text().await.unwrap_or_default();
        assert!(!status.is_server_error(), "{status}: {body}");
        Page {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(self.client.get(self.srv.url(path))).await
    }

    async fn post_raw(&self, path: &str, pairs: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.send(
            self.client
                .post(self.srv.url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    /// Posts a form with this session's CSRF token.
    async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Page {
        let mut all = vec![("_csrf", self.csrf.as_str())];
        all.extend_from_slice(pairs);
        self.post_raw(path, &all).await
    }
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(s[i..j].to_string())
}

/// The first open task of instance `id` (as the admin reads it).
async fn first_task(srv: &Server, id: &str) -> String {
    let inst = srv.instance(id).await;
    inst["tasks"][0]["id"]
        .as_str()
        .expect("an open task")
        .to_string()
}

/// Starts a complaint from the start page as `user`; returns the instance id.
async fn start_complaint(b: &Browser<'_>) -> String {
    let r = b
        .post(
            "/start/complaint-handling",
            &[
                ("f.customer", "Hengxin Lifting"),
                ("f.contact", "Mr Li, 0531-8888 6666"),
                ("_go", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    r.location()
        .strip_prefix("/instances/")
        .expect("a redirect to the instance page")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_gives_a_strict_http_only_session_and_every_page_its_security_headers() {
    let srv = Server::start().await;
    let anon = Browser::new(&srv);
    let r = anon.get("/tasks").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/sign-in");
    let r = anon
        .post_raw("/sign-in", &[("token", "sfk_not-a-token")])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("That token is not valid"), "{}", r.body);
    // A sign-in form posted from another site (login CSRF) is refused.
    let r = anon
        .send(
            anon.client
                .post(srv.url("/sign-in"))
                .header("origin", "https://evil.example")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={}", srv.token("xu.na"))),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.headers.get("set-cookie").is_none());

    let r = anon
        .post_raw("/sign-in", &[("token", srv.token("xu.na"))])
        .await;
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(flag), "{flag} missing from {cookie}");
    }
    // Over TLS (as a proxy in front says), the cookie is Secure too.
    let r = anon
        .send(
            anon.client
                .post(srv.url("/sign-in"))
                .header("x-forwarded-proto", "https")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={}", srv.token("xu.na"))),
        )
        .await;
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    let b = Browser::signed_in(&srv, "xu.na").await;
    let page = b.get("/tasks").await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert!(page.body.contains("Xu Na"));
    // No inline script or style anywhere on the page.
    assert!(!page.body.contains("<script>") && !page.body.contains("style="));

    // Signing out ends the session at once.
    let r = b.post("/sign-out", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(b.get("/tasks").await.location(), "/sign-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_form_comes_back_with_its_problems_and_what_was_typed_and_changes_nothing() {
    let srv = Server::start().await;
    let xu = Browser::signed_in(&srv, "xu.na").await;
    // The start form refuses missing data with the field named, and keeps what was typed.
    let r = xu
        .post(
            "/start/complaint-handling",
            &[("f.customer", "Typed <b>customer</b>"), ("_go", "1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("class=\"field-error\""), "{}", r.body);
    assert!(
        r.body.contains("Typed &#60;b&#62;customer&#60;/b&#62;"),
        "{}",
        r.body
    );
    assert!(srv.all_instances().await.is_empty());

    let id = start_complaint(&xu).await;
    let task = first_task(&srv, &id).await;
    let page = xu.get("/tasks").await;
    assert!(page.body.contains(&format!("data-task=\"{task}\"")));
    assert!(page
        .body
        .contains("Register, classify and answer the complaint"));
    assert!(page.body.contains("Hengxin Lifting"));

    let before = srv.snapshot(&id).await;
    let r = xu
        .post(
            &format!("/tasks/{task}/complete"),
            &[
                ("f.channel", "telephone"),
                ("f.complaint", "The roller arrived damaged"),
                ("comment", "first try"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("role=\"alert\""));
    assert!(r.body.contains("aria-invalid=\"true\""));
    // What was typed is still there: the text, the choice, the comment.
    assert!(r.body.contains("The roller arrived damaged"));
    assert!(r.body.contains("<option value=\"telephone\" selected>"));
    assert!(r.body.contains(">first try</textarea>"));
    srv.assert_unchanged(&id, &before, "a refused form").await;

    let r = xu
        .post(
            &format!("/tasks/{task}/complete"),
            &[
                ("f.channel", "telephone"),
                ("f.complaint", "The roller arrived damaged"),
                ("f.severity", "general"),
                ("f.first_answer", "A new one ships today"),
                ("f.received_at", "2026-11-02T08:30"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let after = xu.get("/tasks").await;
    assert!(
        after.body.contains("role=\"status\""),
        "a message says it is done"
    );
    let sales = Browser::signed_in(&srv, "liu.yang").await;
    assert!(sales
        .get("/tasks")
        .await
        .body
        .contains("Resolve the complaint and fill in the completion column"));
    // The report counts what happened at this very instant, and rates read as percent.
    let report = sales
        .get("/reports/kpis?procedure=complaint-handling")
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert!(report.body.contains("<td>100 %</td>"), "{}", report.body);
    assert!(!report.body.contains("10000"), "{}", report.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_sessions_csrf_token_or_from_another_site_changes_nothing() {
    let srv = Server::start().await;
    let xu = Browser::signed_in(&srv, "xu.na").await;
    let id = start_complaint(&xu).await;
    let task = first_task(&srv, &id).await;
    let before = srv.snapshot(&id).await;
    let path = format!("/tasks/{task}/claim");
    for pairs in [vec![], vec![("_csrf", "sopflow_forged")]] {
        let r = xu.post_raw(&path, &pairs).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(r.body.contains("Not allowed"));
    }
    // The right token from another site's page is refused by its origin.
    let r = xu
        .send(
            xu.client
                .post(srv.url(&path))
                .header("origin", "https://evil.example")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("_csrf={}", xu.csrf)),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Another person's token does not pass for this session.
    let other = Browser::signed_in(&srv, "gao.yan").await;
    let r = xu.post_raw(&path, &[("_csrf", &other.csrf)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    srv.assert_unchanged(&id, &before, "forged posts").await;
    // With its own token the same post works.
    assert_eq!(xu.post(&path, &[]).await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        srv.instance(&id).await["tasks"][0]["claimed_by"],
        Value::from("xu.na")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_text_is_shown_as_text_never_as_markup() {
    let srv = Server::start().await;
    let xu = Browser::signed_in(&srv, "xu.na").await;
    let id = start_complaint(&xu).await;
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let r = xu
        .post(&format!("/instances/{id}/comments"), &[("comment", evil)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = xu.get(&format!("/instances/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    // askama writes `<` and `>` as numeric references.
    assert!(
        page.body.contains(
            "&#60;script&#62;alert(1)&#60;/script&#62;&#60;img src=x onerror=alert(2)&#62;"
        ),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>alert(1)"));
    assert!(!page.body.contains("<img src=x"));
    // The picture is drawn on the server and is part of the page.
    assert!(page.body.contains("<svg"), "the procedure picture");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_refuse_what_the_api_refuses_and_change_nothing() {
    let srv = Server::start().await;
    let xu = Browser::signed_in(&srv, "xu.na").await;
    let id = start_complaint(&xu).await;
    let task = first_task(&srv, &id).await;
    let before = srv.snapshot(&id).await;
    // Sales holds no role the register step is offered to.
    let sales = Browser::signed_in(&srv, "liu.yang").await;
    let page = sales.get(&format!("/tasks/{task}")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(page.body.contains("Not allowed"));
    for path in [
        format!("/tasks/{task}/claim"),
        format!("/tasks/{task}/complete"),
    ] {
        let r = sales.post(&path, &[("f.severity", "general")]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }
    let r = sales.get(&format!("/instances/{id}")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The auditor reads everything and changes nothing.
    let auditor = Browser::signed_in(&srv, "jiang.audit").await;
    assert_eq!(
        auditor.get(&format!("/tasks/{task}")).await.status,
        StatusCode::OK
    );
    let r = auditor.post(&format!("/tasks/{task}/claim"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Staff do not reach the audit pages.
    assert_eq!(xu.get("/audit").await.status, StatusCode::FORBIDDEN);
    assert_eq!(xu.get("/admin/clock").await.status, StatusCode::FORBIDDEN);
    // The migration page lists running instances and moves them: admin and the procedure's
    // operator roles only, for reading as for posting.
    let r = xu.get("/procedures/complaint-handling/migrate").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("needs admin"), "{}", r.body);
    let r = auditor
        .post("/procedures/complaint-handling/migrate", &[("reason", "x")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let admin = Browser::signed_in(&srv, "it.admin").await;
    let r = admin.get("/procedures/complaint-handling/migrate").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // An unknown task is a page saying so.
    let r = xu.get(&format!("/tasks/{}", uuid::Uuid::nil())).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("Not found"));
    // A mistyped address is a page for a browser, a problem for an API client.
    let r = xu
        .send(
            xu.client
                .get(srv.url("/no-such-page"))
                .header("accept", "text/html"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("<h1>Not found</h1>"), "{}", r.body);
    let r = xu.get("/v1/no-such-endpoint").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.starts_with('{'), "{}", r.body);
    srv.assert_unchanged(&id, &before, "refused pages").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_finds_events_verifies_the_chains_and_downloads_them() {
    let srv = Server::start().await;
    let xu = Browser::signed_in(&srv, "xu.na").await;
    let id = start_complaint(&xu).await;
    let auditor = Browser::signed_in(&srv, "jiang.audit").await;
    let page = auditor.get("/audit?actor=xu.na").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(&format!("/instances/{id}")));
    assert!(page.body.contains("Xu Na"));
    let v = auditor.get("/audit/verify").await;
    assert!(v.body.contains("histories verify"), "{}", v.body);
    let v = auditor.get(&format!("/audit/verify?instance={id}")).await;
    assert!(v.body.contains("This history verifies"), "{}", v.body);
    let csv = auditor.get("/audit/export.csv?actor=xu.na").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(csv.headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert!(csv.body.contains(&id) && csv.body.contains("xu.na"));
    let jsonl = auditor
        .get("/audit/export.jsonl?procedure=complaint-handling")
        .await;
    let lines: Vec<Value> = jsonl
        .body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(!lines.is_empty());
    // The same export through the API, as the admin.
    let api = srv.get_reply(ADMIN, "/v1/audit/export?format=csv").await;
    assert_eq!(api.status, StatusCode::OK);
    let api = srv.get_reply("xu.na", "/v1/audit/export").await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_owners_check_a_procedure_and_admins_move_the_clock() {
    let srv = Server::start().await;
    let owner = Browser::signed_in(&srv, "qian.li").await;
    let page = owner.get("/procedures").await;
    assert!(page.body.contains("Customer complaint handling"));
    let page = owner.get("/procedures/complaint-handling").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<svg"));
    let broken =
        "id = \"x\"\nversion = 1\ntitle = \"X\"\nstart = \"nowhere\"\n\n[steps.a]\nrole = \"r\"\n";
    let r = owner
        .post(
            "/procedures/validate",
            &[("text", broken), ("name", "x.toml")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("line 4:"), "{}", r.body);
    assert!(r.body.contains("role=\"alert\""));
    // Staff do not validate.
    let xu = Browser::signed_in(&srv, "xu.na").await;
    assert_eq!(
        xu.post("/procedures/validate", &[("text", broken)])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let admin = Browser::signed_in(&srv, ADMIN).await;
    let r = admin.post("/admin/clock", &[("by", "2h")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("The clock moved"), "{}", r.body);
    let r = admin.post("/admin/clock", &[("by", "soon")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
}

/// The registers procedures keep, over the API and as pages: the seeded customer ratings,
/// entries paged by key, hostile keys shown as text, an unknown register a 404 page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_are_listed_and_their_entries_shown() {
    let srv = Server::start().await;
    let list = srv.get_ok("xu.na", "/v1/registers").await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, ["customers", "warranties"]);
    let page = srv.get_ok("xu.na", "/v1/registers/customers?limit=1").await;
    assert_eq!(page["items"][0]["key"], "Hengxin Lifting");
    assert_eq!(page["items"][0]["values"]["aaa"], true);
    assert_eq!(page["next_after"], "Hengxin Lifting");
    let rest = srv
        .get_ok("xu.na", "/v1/registers/customers?after=Hengxin%20Lifting")
        .await;
    assert_eq!(rest["items"][0]["key"], "Xiangtan Steel Works");
    assert!(rest["next_after"].is_null());
    let (s, _) = srv.get("xu.na", "/v1/registers/no-such").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = srv.get("xu.na", "/v1/registers/customers?limit=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let long = "x".repeat(513);
    let (s, _) = srv
        .get("xu.na", &format!("/v1/registers/customers?after={long}"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let b = Browser::signed_in(&srv, "xu.na").await;
    let page = b.get("/registers").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Customer ratings"), "{}", page.body);
    let page = b.get("/registers/customers").await;
    assert!(page.body.contains("Hengxin Lifting") && page.body.contains("AAA customer"));
    let page = b.get("/registers/%3Cscript%3E").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!page.body.contains("<script>"));
}

/// The start form carries a key of its own: sent twice (a double click, a reload after a
/// lost answer) it starts one instance and says so; changed and sent again with the same
/// key (the back button) it asks before starting another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_form_sent_twice_starts_one_instance() {
    let srv = Server::start().await;
    let xu = Browser::signed_in(&srv, "xu.na").await;
    let form = xu.get("/start/complaint-handling").await;
    let once = between(&form.body, "name=\"_once\" value=\"", "\"").expect("the form's key");
    let fields = |customer: &'static str| {
        vec![
            ("f.customer", customer),
            ("f.contact", "Mr Li, 0531-8888 6666"),
            ("_go", "1"),
        ]
    };
    let mut first = fields("Hengxin Lifting");
    first.push(("_once", once.as_str()));
    let a = xu.post("/start/complaint-handling", &first).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let b = xu.post("/start/complaint-handling", &first).await;
    assert_eq!(b.status, StatusCode::SEE_OTHER, "{}", b.body);
    assert_eq!(a.location(), b.location());
    assert_eq!(srv.all_instances().await.len(), 1);
    let shown = xu.get(&b.location()).await;
    assert!(shown.body.contains("Already started"), "{}", shown.body);

    let mut changed = fields("Another customer");
    changed.push(("_once", once.as_str()));
    let c = xu.post("/start/complaint-handling", &changed).await;
    assert_eq!(c.status, StatusCode::CONFLICT, "{}", c.body);
    assert!(c.body.contains("already started an instance"), "{}", c.body);
    assert!(c.body.contains("Another customer"), "{}", c.body);
    let fresh = between(&c.body, "name=\"_once\" value=\"", "\"").expect("a new key");
    assert_ne!(fresh, once);
    assert_eq!(srv.all_instances().await.len(), 1);
}
