//! Mail digests: a person whose directory entry says `digest = "hourly"` or `"daily"` gets
//! their notices gathered into one letter per hour or per day instead of one letter each.
//!
//! A notice for such a person is queued like any letter, in the commit of its event, but
//! under the destination `digest:<user>` and not to be sent before the next digest time
//! (`slot`). When that time comes the sender reads everything due for the person (`due`),
//! across instances, and sends it as one letter (`letter`); the letter's fate (sent, tried
//! again later, dead) is recorded for every notice in it. So a digest is as durable as a
//! single letter: a crash before the digest goes out loses nothing.
//!
//! This module must not send anything itself, and reads only the outbox.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use sha2::{Digest as _, Sha256};

use crate::directory::model::MailDigest;
use crate::store::{Delivery, Store, StoreError};

/// The hour of the day (in the server's zone) a daily digest goes out.
pub const DAILY_AT: u32 = 8;
/// Notices in one letter at most; more go in the next letter, sent straight after.
pub const MAX_NOTICES: usize = 100;
/// Pending entries of one person read per pass at most.
const SCAN: usize = 2_000;

/// The destination of `user`'s digest.
pub fn destination(user: &str) -> String {
    format!("digest:{user}")
}

/// The first digest time at or after `at_ms` for `plan` in `zone`, Unix milliseconds.
pub fn slot(at_ms: i64, plan: MailDigest, zone: Tz) -> i64 {
    let Some(at) = DateTime::<Utc>::from_timestamp_millis(at_ms) else {
        return at_ms;
    };
    let local = at.with_timezone(&zone).naive_local();
    let candidate = match plan {
        MailDigest::Hourly => {
            let hour = local
                .date()
                .and_hms_opt(local.hour(), 0, 0)
                .unwrap_or(local);
            if hour == local {
                hour
            } else {
                hour + Duration::hours(1)
            }
        }
        MailDigest::Daily => {
            let eight = NaiveTime::from_hms_opt(DAILY_AT, 0, 0).unwrap_or_default();
            let today = local.date().and_time(eight);
            if today >= local {
                today
            } else {
                today + Duration::days(1)
            }
        }
    };
    // A local time a clock change skips is taken an hour later; one it repeats, the first
    // time. Never earlier than the notice itself.
    let resolved = zone
        .from_local_datetime(&candidate)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(candidate + Duration::hours(1)))
                .earliest()
        })
        .map_or(at_ms, |t| t.timestamp_millis());
    resolved.max(at_ms)
}

/// The notices queued for `destination` that are due by `now`, oldest event first, at most
/// `MAX_NOTICES`; `later` hears when the earliest of the others falls due.
pub(super) fn due<S: Store + ?Sized>(
    store: &S,
    destination: &str,
    now: i64,
    later: &mut dyn FnMut(i64),
) -> Result<Vec<Delivery>, StoreError> {
    let mut got = Vec::new();
    super::sender::each_pending(store, destination, SCAN, &mut |d| {
        if d.next_ms > now {
            later(d.next_ms);
        } else if got.len() == MAX_NOTICES {
            later(now);
        } else {
            got.push(d);
        }
        true
    })?;
    got.sort_by_key(|d| (d.at_ms, d.instance, d.seq));
    Ok(got)
}

/// (subject, text, Message-ID) of the letter gathering `notices` for `user`.
pub(super) fn letter(user: &str, notices: &[Delivery], zone: Tz) -> (String, String, String) {
    let n = notices.len();
    let title = |d: &Delivery| {
        d.subject
            .as_deref()
            .unwrap_or("Notice")
            .trim_start_matches("[sopflow] ")
            .to_string()
    };
    let subject = match notices {
        [one] => format!("[sopflow] Digest: {}", title(one)),
        [first, ..] => format!("[sopflow] Digest: {n} notices — {} …", title(first)),
        [] => "[sopflow] Digest".to_string(),
    };
    let mut text = format!(
        "{n} notice{} for you, oldest first.\n",
        if n == 1 { "" } else { "s" }
    );
    let mut id = Sha256::new();
    for (i, d) in notices.iter().enumerate() {
        let when = DateTime::<Utc>::from_timestamp_millis(d.at_ms)
            .map(|t| t.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        text.push_str(&format!("\n{}. {} ({when})\n", i + 1, title(d)));
        // Each notice's own text without its signature line: one closes the letter.
        let body = d.body.split("\n-- \n").next().unwrap_or_default();
        for line in body.trim_end().lines() {
            if line.is_empty() {
                text.push('\n');
            } else {
                text.push_str(&format!("   {line}\n"));
            }
        }
        id.update(d.instance.as_bytes());
        id.update(d.seq.to_be_bytes());
    }
    text.push_str(
        "\n-- \nsopflow: your mail digest, as your entry in the directory asks (`digest`).\n",
    );
    let hash = id.finalize();
    let safe: String = user
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let message_id = format!(
        "<digest.{}.{safe}@sopflow>",
        hash[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    (subject, text, message_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn a_daily_digest_goes_at_eight_in_the_zone_today_or_tomorrow() {
        let sh = chrono_tz::Asia::Shanghai;
        let d = MailDigest::Daily;
        assert_eq!(
            slot(ms("2026-11-04T07:59:00+08:00"), d, sh),
            ms("2026-11-04T08:00:00+08:00")
        );
        assert_eq!(
            slot(ms("2026-11-04T08:00:00+08:00"), d, sh),
            ms("2026-11-04T08:00:00+08:00"),
            "at the very time: this digest"
        );
        assert_eq!(
            slot(ms("2026-11-04T09:30:00+08:00"), d, sh),
            ms("2026-11-05T08:00:00+08:00")
        );
    }

    #[test]
    fn an_hourly_digest_goes_at_the_next_full_hour_also_in_half_hour_zones() {
        let h = MailDigest::Hourly;
        assert_eq!(
            slot(ms("2026-11-04T09:10:00Z"), h, chrono_tz::UTC),
            ms("2026-11-04T10:00:00Z")
        );
        // India is 5:30 ahead: the local hour, not UTC's.
        assert_eq!(
            slot(ms("2026-11-04T09:10:00+05:30"), h, chrono_tz::Asia::Kolkata),
            ms("2026-11-04T10:00:00+05:30")
        );
    }

    #[test]
    fn a_digest_time_a_clock_change_skips_is_an_hour_later() {
        // Europe/Berlin skips 02:00–03:00 on 2026-03-29; an hourly digest due at 03:00 local
        // (which exists) after a notice at 01:30.
        let berlin = chrono_tz::Europe::Berlin;
        let at = ms("2026-03-29T01:30:00+01:00");
        let got = slot(at, MailDigest::Hourly, berlin);
        assert!(got > at);
        assert_eq!(got, ms("2026-03-29T03:00:00+02:00"));
    }

    #[test]
    fn the_letter_lists_each_notice_once_with_one_signature_and_a_stable_id() {
        let notice = |seq: u64, what: &str| Delivery {
            destination: destination("zhao.gang"),
            instance: crate::store::InstanceId::from_u128(7),
            seq,
            procedure: "complaint-handling".into(),
            kind: "mail".into(),
            at_ms: ms("2026-11-04T09:00:00Z") + i64::try_from(seq).unwrap(),
            body: format!(
                "{what}\n\nProcedure: complaint-handling\n\n-- \nsopflow: sent because…\n"
            ),
            subject: Some(format!("[sopflow] Notice: {what}")),
            attempts: 0,
            next_ms: 0,
            last_error: None,
            done_ms: None,
        };
        let notices = [notice(3, "Late registration"), notice(9, "Late handling")];
        let (subject, text, id) = letter("zhao.gang", &notices, chrono_tz::UTC);
        assert_eq!(
            subject,
            "[sopflow] Digest: 2 notices — Notice: Late registration …"
        );
        assert!(text.starts_with("2 notices for you"), "{text}");
        assert!(
            text.contains("1. Notice: Late registration (2026-11-04 09:00)"),
            "{text}"
        );
        assert!(text.contains("2. Notice: Late handling"), "{text}");
        assert!(text.contains("   Procedure: complaint-handling"), "{text}");
        assert_eq!(text.matches("\n-- \n").count(), 1, "{text}");
        assert_eq!(letter("zhao.gang", &notices, chrono_tz::UTC).2, id);
        assert_ne!(letter("zhao.gang", &notices[..1], chrono_tz::UTC).2, id);
        assert!(id.starts_with("<digest.") && id.ends_with(".zhao-gang@sopflow>"));
    }
}
