//! The README's first steps with the API, run as written against a real server, so the
//! README and the API cannot drift apart: the `curl` commands of "Two commands" are read
//! from README.md, split into words as the shell would, and sent with their method,
//! headers and JSON body; `$T` is the token the README's `awk` line picks from the
//! `demo-tokens.txt` the server wrote. A curl option this reader does not know fails the
//! test, so a new command in that section is checked too, or the test says why not.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::*;

/// One `curl` command of the README.
#[derive(Debug)]
struct Curl {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

/// The shell text of the README section `## {title}`: its `sh` blocks, with `\`-newline
/// continuations joined.
fn shell_of_section(readme: &str, title: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no section `## {title}`"));
    let rest = &readme[start + 4 + title.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in section.lines() {
        if !in_sh {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if line.trim() == "```" {
            in_sh = false;
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

/// Words as the shell splits them: single quotes literal, double quotes and bare words with
/// `$T` replaced by `token`. Enough for the README; anything else is refused.
fn words(line: &str, token: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    // The unquoted characters of the current word, expanded when a quote or a space ends them.
    let mut bare = String::new();
    let mut started = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                started = true;
                word.push_str(&std::mem::take(&mut bare).replace("$T", token));
                let mut inner = String::new();
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    assert!(
                        c == '\'' || (q != '\\' && q != '`'),
                        "unsupported in double quotes: {line}"
                    );
                    inner.push(q);
                }
                if c == '"' {
                    inner = inner.replace("$T", token);
                }
                word.push_str(&inner);
            }
            c if c.is_whitespace() => {
                if started {
                    word.push_str(&std::mem::take(&mut bare).replace("$T", token));
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            '#' if !started => break,
            c => {
                assert!(!"|;&<>`\\".contains(c), "unsupported shell in: {line}");
                started = true;
                bare.push(c);
            }
        }
    }
    if started {
        word.push_str(&bare.replace("$T", token));
        out.push(word);
    }
    out
}

fn curl(words: &[String]) -> Curl {
    assert_eq!(words[0], "curl");
    let mut method = None;
    let mut headers = Vec::new();
    let mut body = None;
    let mut url = None;
    let mut it = words[1..].iter();
    while let Some(w) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| panic!("{w} without a value in {words:?}"))
                .clone()
        };
        match w.as_str() {
            "-s" | "--silent" => {}
            "-X" | "--request" => {
                method = Some(Method::from_bytes(value().as_bytes()).expect("a method"))
            }
            "-H" | "--header" => {
                let h = value();
                let (k, v) = h.split_once(':').expect("a header `Name: value`");
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            "-d" | "--data" => body = Some(value()),
            other if other.starts_with('-') => {
                panic!("the README's curl uses {other}, which this test does not know")
            }
            other => url = Some(other.to_string()),
        }
    }
    let url = url.expect("a URL");
    let path = url
        .strip_prefix("http://")
        .unwrap_or(&url)
        .strip_prefix("localhost:8080")
        .unwrap_or_else(|| panic!("the README's URL {url} is not on localhost:8080"))
        .to_string();
    Curl {
        // curl sends a POST when given data, a GET otherwise.
        method: method.unwrap_or(if body.is_some() {
            Method::POST
        } else {
            Method::GET
        }),
        path,
        headers,
        body,
    }
}

/// The token the README's `T=$(awk '$1=="USER"{print $2}' data/demo-tokens.txt)` line gives,
/// read the way awk would from the file the server wrote, and the user it names.
fn token_line(line: &str, srv: &Server) -> (String, String) {
    let user = line
        .split("$1==\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no user in {line}"));
    let file = line
        .split_whitespace()
        .last()
        .and_then(|w| w.strip_suffix(')'))
        .and_then(|f| f.strip_prefix("data/"))
        .unwrap_or_else(|| panic!("no data/ file in {line}"));
    let text = std::fs::read_to_string(srv.data_dir().join(file)).expect("the tokens file");
    let token = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&user))
        .and_then(|f| f.get(1).map(|t| t.to_string()))
        .unwrap_or_else(|| panic!("{user} has no line in {file}"));
    (user.to_string(), token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_commands_work_as_written() {
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    let srv = Server::start().await;
    let mut token = None;
    let mut replies: Vec<(Curl, StatusCode, Value)> = Vec::new();
    for line in shell_of_section(&readme, "Two commands") {
        let line = line.trim();
        if line.starts_with("T=$(awk") {
            let (user, t) = token_line(line, &srv);
            assert_eq!(t, srv.token(&user), "the awk line finds {user}'s token");
            token = Some(t);
            continue;
        }
        if !line.starts_with("curl ") {
            continue;
        }
        let t = token
            .as_deref()
            .expect("the token line comes before the curl commands");
        let c = curl(&words(line, t));
        let extra: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = match &c.body {
            Some(b) => {
                serde_json::from_str::<Value>(b)
                    .unwrap_or_else(|e| panic!("the README's body is not JSON ({e}): {b}"));
                Body::Raw(None, b.clone().into_bytes())
            }
            None => Body::Empty,
        };
        let r = srv
            .send(c.method.clone(), &c.path, Auth::None, body, &extra)
            .await;
        assert!(
            r.status.is_success(),
            "{} {} answered {}: {}",
            c.method,
            c.path,
            r.status,
            r.text()
        );
        let v = r.json();
        replies.push((c, r.status, v));
    }
    // What the README says happens: an empty worklist, a complaint started, and its first
    // step in the worklist.
    let shape: Vec<(String, &str)> = replies
        .iter()
        .map(|(c, _, _)| (c.method.to_string(), c.path.as_str()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("GET".to_string(), "/v1/tasks"),
            ("POST".to_string(), "/v1/instances"),
            ("GET".to_string(), "/v1/tasks"),
        ]
    );
    assert_eq!(replies[0].2["items"], serde_json::json!([]));
    let (_, status, started) = &replies[1];
    assert_eq!(*status, StatusCode::CREATED);
    assert_eq!(started["procedure"], "complaint-handling");
    assert_eq!(started["status"], "running");
    let items = replies[2].2["items"].as_array().expect("a worklist");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["step"], "register");
    assert_eq!(items[0]["instance"], started["id"]);
}

#[test]
fn the_shell_reader_splits_like_the_shell() {
    assert_eq!(
        words(
            r#"curl -s -H "Authorization: Bearer $T" -d '{"a": "$T b"}' x # note"#,
            "tok"
        ),
        vec![
            "curl",
            "-s",
            "-H",
            "Authorization: Bearer tok",
            "-d",
            r#"{"a": "$T b"}"#,
            "x"
        ]
    );
}
