//! One pass's work on one chain: sending its messages in order (a webhook call, a mail, or a
//! person's digest as one letter), and recording how each try went (`settle`): sent, tried
//! again after a backoff, or dead. It must not read the outbox's queues or commit anything;
//! the pass does both.

use super::*;

/// What one chain needs, owned so it can run on a task of its own.
pub(super) struct Job<S: Store> {
    pub(super) store: Arc<S>,
    pub(super) routes: Arc<Routes>,
    pub(super) guarded: reqwest::Client,
    pub(super) open: reqwest::Client,
    pub(super) mailer: Option<Mailer>,
    pub(super) clock: Arc<dyn Clock>,
}

/// How one try went.
pub(super) enum Outcome {
    Sent,
    Failed(String),
    /// Trying again cannot help (no such subscription or person any more).
    Dead(String),
}

impl<S: Store> Job<S> {
    /// Sends a chain's messages in order until one fails; returns the writes recording it.
    pub(super) async fn chain(&self, chain: Vec<Delivery>) -> Vec<OutboxWrite> {
        if chain
            .first()
            .is_some_and(|d| d.destination.starts_with("digest:"))
        {
            return self.digest(chain).await;
        }
        let mut writes = Vec::new();
        for d in chain {
            let outcome = self.try_once(&d).await;
            let now = self.clock.now().timestamp_millis();
            if !settle(d, &outcome, now, &mut writes) {
                break;
            }
        }
        writes
    }

    /// Sends a person's due notices as one letter; each notice shares its fate.
    async fn digest(&self, notices: Vec<Delivery>) -> Vec<OutboxWrite> {
        let user = notices[0].destination.trim_start_matches("digest:");
        let outcome = match self.mail_to(user) {
            Err(o) => o,
            Ok((mailer, address)) => {
                let zone = self.routes.mail.as_ref().map_or(chrono_tz::UTC, |m| m.zone);
                let (subject, text, id) = crate::outbox::digest::letter(user, &notices, zone);
                match mailer.send_letter(address, subject, text, id).await {
                    Ok(()) => Outcome::Sent,
                    Err(MailError::Transient(e)) => Outcome::Failed(e),
                    Err(MailError::Permanent(e)) => Outcome::Dead(e),
                }
            }
        };
        let now = self.clock.now().timestamp_millis();
        let mut writes = Vec::new();
        for d in notices {
            settle(d, &outcome, now, &mut writes);
        }
        writes
    }

    /// The mailer and `user`'s address, or why no letter can go to them.
    fn mail_to(&self, user: &str) -> Result<(&Mailer, &str), Outcome> {
        let Some(mailer) = &self.mailer else {
            return Err(Outcome::Failed(
                "no mail server is configured (SOPFLOW_SMTP_URL)".into(),
            ));
        };
        match self
            .routes
            .mail
            .as_ref()
            .and_then(|m| m.addresses.get(user))
        {
            Some(address) => Ok((mailer, address)),
            None => Err(Outcome::Dead(format!(
                "`{user}` has no mail address in the directory now (or is inactive)"
            ))),
        }
    }

    async fn try_once(&self, d: &Delivery) -> Outcome {
        if let Some(id) = d.destination.strip_prefix("hook:") {
            match self.routes.hook(id) {
                Some(s) => self.call(s, d).await,
                None => Outcome::Dead(format!(
                    "no subscription `{id}` any more (neither in the webhooks file nor made over the API)"
                )),
            }
        } else if let Some(user) = d.destination.strip_prefix("mail:") {
            let (mailer, address) = match self.mail_to(user) {
                Ok(to) => to,
                Err(o) => return o,
            };
            match mailer.send(d, address).await {
                Ok(()) => Outcome::Sent,
                Err(MailError::Transient(e)) => Outcome::Failed(e),
                Err(MailError::Permanent(e)) => Outcome::Dead(e),
            }
        } else {
            Outcome::Dead(format!("unknown destination `{}`", d.destination))
        }
    }

    /// A webhook's body: made from the event in the history (the same bytes on every try).
    fn body(&self, d: &Delivery) -> Result<String, Outcome> {
        if !d.body.is_empty() {
            return Ok(d.body.clone());
        }
        let stored = self
            .store
            .history(d.instance, d.seq, 1)
            .map_err(|e| Outcome::Failed(format!("the event cannot be read: {e}")))?;
        let Some(ev) = stored.into_iter().find(|e| e.seq == d.seq) else {
            return Err(Outcome::Dead(format!(
                "event {} of {} is not in the store",
                d.seq, d.instance
            )));
        };
        let event: crate::engine::instance::Event =
            serde_json::from_slice(&ev.bytes).map_err(|e| {
                Outcome::Dead(format!(
                    "event {} of {} cannot be read: {e}",
                    d.seq, d.instance
                ))
            })?;
        Ok(crate::outbox::payload(
            &self.routes,
            &d.kind,
            d.instance,
            &d.procedure,
            &event,
        ))
    }

    async fn call(&self, s: &Subscription, d: &Delivery) -> Outcome {
        if !s.allow_private {
            if let Some(why) = crate::outbox::ssrf::literal_refusal(&s.url) {
                return Outcome::Dead(why);
            }
        }
        let client = if s.allow_private {
            &self.open
        } else {
            &self.guarded
        };
        let body = match self.body(d) {
            Ok(b) => b,
            Err(o) => return o,
        };
        let id = message_id(d);
        let ts = crate::clock::SystemClock.now().timestamp();
        let sig = crate::outbox::sign::signature(&s.key, &id, ts, &body);
        let sent = client
            .post(s.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Outcome::Sent,
            Ok(r) => Outcome::Failed(format!("the receiver answered {}", r.status())),
            // Without the URL: it may carry a token in its query.
            Err(e) => Outcome::Failed(error_chain(&e.without_url())),
        }
    }
}

/// The `webhook-id` of a delivery: the same on every try, and for every receiver of the
/// same event.
/// Records how one try of `d` went into `writes`; false when the messages after it in its
/// chain must wait (it failed and will be tried again).
fn settle(mut d: Delivery, outcome: &Outcome, now: i64, writes: &mut Vec<OutboxWrite>) -> bool {
    writes.push(OutboxWrite::remove(DeliveryState::Pending, d.clone()));
    d.attempts += 1;
    match outcome {
        Outcome::Sent => {
            d.done_ms = Some(now);
            d.last_error = None;
            // The record of a sent message says what went where and when; the body (the
            // bulk of its bytes) is in the history the message came from.
            d.body = String::new();
            writes.push(OutboxWrite::put(DeliveryState::Sent, d));
            metrics::counter!("sopflow_deliveries_total", "result" => "sent").increment(1);
            true
        }
        Outcome::Failed(why) if d.attempts < MAX_ATTEMPTS => {
            d.last_error = Some(clip(why));
            d.next_ms = now.saturating_add(backoff(&d));
            tracing::info!(destination = %d.destination, instance = %d.instance, seq = d.seq, attempts = d.attempts, error = %why, "delivery failed; will try again");
            // Rewriting the pending entry under its own key: the removal above is undone by
            // this later write of the same key.
            writes.push(OutboxWrite::put(DeliveryState::Pending, d));
            metrics::counter!("sopflow_deliveries_total", "result" => "failed").increment(1);
            false
        }
        Outcome::Failed(why) | Outcome::Dead(why) => {
            d.last_error = Some(clip(why));
            d.done_ms = Some(now);
            tracing::warn!(destination = %d.destination, instance = %d.instance, seq = d.seq, attempts = d.attempts, error = %why, "delivery is dead; retry it by hand once the receiver is fixed");
            writes.push(OutboxWrite::put(DeliveryState::Dead, d));
            metrics::counter!("sopflow_deliveries_total", "result" => "dead").increment(1);
            // A dead message no longer holds the ones after it back.
            true
        }
    }
}

pub fn message_id(d: &Delivery) -> String {
    format!("msg_{}_{}", d.instance.simple(), d.seq)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn clip(s: &str) -> String {
    s.chars().take(ERROR_CHARS).collect()
}

/// The delay before try `attempts + 1`: doubling from `FIRST_BACKOFF`, capped, with ±20 %
/// jitter drawn from the delivery's own key (so many messages failing together do not all
/// come back at the same instant, and a test can predict it).
pub fn backoff(d: &Delivery) -> i64 {
    let base = FIRST_BACKOFF.as_millis() as i64;
    let doubled = base.saturating_mul(1i64 << d.attempts.saturating_sub(1).min(20));
    let capped = doubled.min(MAX_BACKOFF.as_millis() as i64);
    let mut h = Sha256::new();
    h.update(d.instance.as_bytes());
    h.update(d.seq.to_be_bytes());
    h.update(d.destination.as_bytes());
    h.update(d.attempts.to_be_bytes());
    let r = h.finalize()[0] as i64; // 0..=255
    capped + capped * (r - 128) / 640
}
