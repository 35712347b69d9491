//! Mail to people: which events become a letter to whom (`letters`: a breach's or a step's
//! `notify`, a deadline reminder — to every active holder of the roles named who has an
//! address in the directory, and to each person named), what it says (plain text: what,
//! which instance, due when, a link to the task), and sending it over SMTP (`Mailer`, lettre;
//! STARTTLS or TLS as the server's address says, credentials only from the environment).
//!
//! This module must not put the SMTP address (which may carry a password) into a log line,
//! an error shown to a user or a stored delivery.

use std::collections::BTreeSet;

use chrono::SecondsFormat;
use lettre::message::{header::ContentType, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{MailRoutes, Routes};
use crate::engine::instance::{Event, EventKind};
use crate::store::{Delivery, InstanceId};

/// What a letter tells, read from the event that causes it.
struct Notice<'a> {
    roles: Vec<&'a String>,
    users: &'a [String],
    task: Option<uuid::Uuid>,
    step: &'a str,
    due: Option<chrono::DateTime<chrono::Utc>>,
    message: &'a str,
    what: &'static str,
}

impl<'a> Notice<'a> {
    fn of(e: &'a Event) -> Option<Notice<'a>> {
        Some(match &e.kind {
            EventKind::Notified {
                task,
                step,
                role,
                to_users,
                message,
            } => Notice {
                roles: (!role.is_empty()).then_some(role).into_iter().collect(),
                users: to_users,
                task: *task,
                step,
                due: None,
                message,
                what: "Notice",
            },
            EventKind::DeadlineReminded {
                task,
                step,
                due,
                to_roles,
                to_users,
                message: Some(message),
                ..
            } => Notice {
                roles: to_roles.iter().collect(),
                users: to_users,
                task: Some(*task),
                step,
                due: Some(*due),
                message,
                what: "Reminder",
            },
            _ => return None,
        })
    }
}

/// (user, subject, text) of every letter `e` causes.
pub(super) fn letters(
    routes: &Routes,
    mail: &MailRoutes,
    instance: InstanceId,
    procedure: &str,
    e: &Event,
) -> Vec<(String, String, String)> {
    let Some(n) = Notice::of(e) else {
        return Vec::new();
    };
    let Notice {
        roles,
        users,
        task,
        step,
        due,
        message,
        what,
    } = n;
    let mut people = BTreeSet::new();
    for r in roles {
        people.extend(mail.holders.get(r).into_iter().flatten().cloned());
    }
    people.extend(
        users
            .iter()
            .filter(|u| mail.addresses.contains_key(*u))
            .cloned(),
    );
    if people.is_empty() {
        return Vec::new();
    }
    let first_line = message.lines().next().unwrap_or_default();
    let subject = format!("[sopflow] {what}: {}", clip(first_line, 120));
    let mut text =
        format!("{message}\n\nProcedure: {procedure}\nStep:      {step}\nInstance:  {instance}\n");
    if let Some(due) = due {
        text.push_str(&format!(
            "Due:       {}\n",
            due.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    let link = match task {
        Some(t) => routes.link(&format!("/tasks/{t}")),
        None => routes.link(&format!("/instances/{instance}")),
    };
    if let Some(link) = link {
        text.push_str(&format!("\nOpen it: {link}\n"));
    }
    text.push_str("\n-- \nsopflow: sent because a procedure step named you or a role you hold.\n");
    people
        .into_iter()
        .map(|u| (u, subject.clone(), text.clone()))
        .collect()
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Why a letter could not be handed to the mail server.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Worth trying again (the server is down, busy, or said "try later").
    #[error("{0}")]
    Transient(String),
    /// Trying again will not help (no address, a refused recipient).
    #[error("{0}")]
    Permanent(String),
}

/// The SMTP connection settings, from `SOPFLOW_SMTP_URL` (e.g.
/// `smtp://user:password@mail.example.com:587?tls=required` for STARTTLS, `smtps://…` for
/// TLS, `smtp://127.0.0.1:2525` for a local relay) and the sender address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    // The transport holds the credentials: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for `url`, sending as `from`. The error never repeats the address.
    pub fn new(url: &str, from: &str) -> Result<Mailer, String> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("the sender address `{from}` is not a mail address: {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("the SMTP address is not usable: {}", scrub(&e.to_string())))?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        Ok(Mailer { transport, from })
    }

    /// Sends one letter to `address`. The Message-ID is the delivery's own, so a letter
    /// sent twice (after a crash between sending and recording it) can be recognised.
    pub async fn send(&self, d: &Delivery, address: &str) -> Result<(), MailError> {
        let user = d.destination.trim_start_matches("mail:");
        let id = format!(
            "<{}.{}.{}@sopflow>",
            d.instance.simple(),
            d.seq,
            user.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        );
        let subject = d.subject.clone().unwrap_or_else(|| "[sopflow]".into());
        self.send_letter(address, subject, d.body.clone(), id).await
    }

    /// Sends a letter made elsewhere (a digest), with its own Message-ID.
    pub async fn send_letter(
        &self,
        address: &str,
        subject: String,
        text: String,
        message_id: String,
    ) -> Result<(), MailError> {
        let to: Mailbox = address
            .parse()
            .map_err(|e| MailError::Permanent(format!("`{address}` is not a mail address: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id))
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| MailError::Permanent(format!("the letter cannot be built: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(MailError::Permanent(scrub(&e.to_string()))),
            Err(e) => Err(MailError::Transient(scrub(&e.to_string()))),
        }
    }
}

/// An error text without anything that looks like `user:password@`.
fn scrub(s: &str) -> String {
    s.split_whitespace()
        .map(|w| match (w.find("://"), w.rfind('@')) {
            (Some(i), Some(j)) if j > i => format!("{}://…@{}", &w[..i], &w[j + 1..]),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_text_loses_its_credentials() {
        assert_eq!(
            scrub("cannot reach smtp://me:secret@mail.example.com:587 now"),
            "cannot reach smtp://…@mail.example.com:587 now"
        );
    }

    #[test]
    fn a_reminder_goes_to_each_holder_with_an_address() {
        let mut mail = MailRoutes::default();
        mail.holders
            .insert("quality".into(), vec!["ann".into(), "bob".into()]);
        mail.addresses
            .insert("ann".into(), "ann@example.com".into());
        mail.addresses
            .insert("bob".into(), "bob@example.com".into());
        let routes = Routes {
            public_url: Some("https://flow.example.com/".into()),
            ..Routes::default()
        };
        let task = uuid::Uuid::from_u128(9);
        let e = Event {
            seq: 4,
            at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            by: None,
            kind: EventKind::DeadlineReminded {
                task,
                step: "review".into(),
                due: chrono::DateTime::from_timestamp(1_700_086_400, 0).unwrap(),
                timer: uuid::Uuid::from_u128(1),
                to_roles: vec!["quality".into()],
                to_users: vec!["carl".into()],
                message: Some("Review the complaint".into()),
                next: None,
            },
        };
        let got = letters(&routes, &mail, InstanceId::from_u128(5), "complaint", &e);
        let users: Vec<_> = got.iter().map(|(u, ..)| u.as_str()).collect();
        assert_eq!(users, ["ann", "bob"], "carl has no address");
        let (_, subject, text) = &got[0];
        assert_eq!(subject, "[sopflow] Reminder: Review the complaint");
        assert!(text.contains("Due:       2023-11-15T22:13:20Z"), "{text}");
        assert!(
            text.contains(&format!("Open it: https://flow.example.com/tasks/{task}")),
            "{text}"
        );
    }
}
