//! `[[webhooks]]`: where events go, which ones, how they are signed and retried. URLs are
//! configuration only (no request field names one), and a webhook's URL is its identity in
//! the outbox.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{WebhookEvent, WebhookRoutes};

/// One webhook.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL that receives a POST per event.
    pub url: String,
    /// Event types it takes: any of [`WebhookEvent::ALL`] by name (`task.succeeded`, …).
    pub events: Vec<String>,
    /// HMAC-SHA256 key of the `ctp-signature` header (at least 16 characters).
    pub secret: String,
    /// Attempts per event before it is marked dead (the first one included).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the second attempt; each later one doubles it (with jitter).
    #[serde(default = "default_backoff")]
    pub backoff_seconds: f64,
    /// Longest delay between two attempts.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: f64,
    /// How long one attempt may take (connect, send, answer).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
}

fn default_max_attempts() -> u32 {
    12
}

fn default_backoff() -> f64 {
    2.0
}

fn default_max_backoff() -> f64 {
    600.0
}

fn default_timeout() -> f64 {
    10.0
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &display_url(&self.url))
            .field("events", &self.events)
            .field("secret", &"<redacted>")
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The delay after failed attempt number `attempt` (1 = the first): `backoff_seconds`
    /// doubled per earlier failure, at most `max_backoff_seconds`, then scaled into its upper
    /// half by `jitter` in [0, 1] ("equal jitter": daemons retrying together spread out, and
    /// no delay is below half its nominal value).
    pub fn retry_delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(60) as i32;
        let nominal = (self.backoff_seconds * 2f64.powi(doublings)).min(self.max_backoff_seconds);
        Duration::from_secs_f64(nominal * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
    }

    /// How long one attempt may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_seconds)
    }
}

/// The URL without user info, query or fragment (for logs, errors and the dashboard: those
/// parts may hold credentials).
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or_default();
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", u.scheme(), u.path())
        }
        Err(_) => "<not a URL>".into(),
    }
}

/// The outbox routes of `hooks` (validated: unknown names were refused at startup).
pub fn routes(hooks: &[Webhook]) -> WebhookRoutes {
    WebhookRoutes::new(hooks.iter().map(|h| {
        let events = h
            .events
            .iter()
            .filter_map(|e| WebhookEvent::parse(e))
            .collect();
        (h.url.clone(), events)
    }))
}

/// Checks every webhook; the error names the entry (`webhooks[i]`), the field and the value.
pub fn validate(hooks: &[Webhook]) -> Result<(), String> {
    let known: Vec<&str> = WebhookEvent::ALL.iter().map(|e| e.as_str()).collect();
    let known = known.join(", ");
    for (i, h) in hooks.iter().enumerate() {
        let at = format!("webhooks[{i}]");
        let shown = display_url(&h.url);
        let url = reqwest::Url::parse(&h.url).map_err(|e| format!("{at}.url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "{at}.url {shown:?}: must be an http:// or https:// URL with a host"
            ));
        }
        if let Some(j) = hooks[..i].iter().position(|o| o.url == h.url) {
            return Err(format!(
                "{at}.url {shown:?} is also webhooks[{j}]'s (a URL names one webhook)"
            ));
        }
        if h.events.is_empty() {
            return Err(format!("{at}.events is empty; name any of: {known}"));
        }
        if let Some(bad) = h.events.iter().find(|e| WebhookEvent::parse(e).is_none()) {
            return Err(format!(
                "{at}.events: unknown event {bad:?} (known: {known})"
            ));
        }
        if h.secret.chars().count() < 16 {
            return Err(format!("{at}.secret is shorter than 16 characters"));
        }
        if !(1..=100).contains(&h.max_attempts) {
            return Err(format!(
                "{at}.max_attempts must be in 1..=100 (got {})",
                h.max_attempts
            ));
        }
        for (key, v, max) in [
            ("backoff_seconds", h.backoff_seconds, 86_400.0),
            ("max_backoff_seconds", h.max_backoff_seconds, 86_400.0),
            ("timeout_seconds", h.timeout_seconds, 300.0),
        ] {
            if !(v > 0.0 && v <= max) {
                return Err(format!("{at}.{key} must be in (0, {max}] (got {v})"));
            }
        }
        if h.max_backoff_seconds < h.backoff_seconds {
            return Err(format!(
                "{at}.max_backoff_seconds ({}) is below backoff_seconds ({})",
                h.max_backoff_seconds, h.backoff_seconds
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> Webhook {
        Webhook {
            url: url.into(),
            events: vec!["task.succeeded".into()],
            secret: "0123456789abcdef".into(),
            max_attempts: default_max_attempts(),
            backoff_seconds: default_backoff(),
            max_backoff_seconds: default_max_backoff(),
            timeout_seconds: default_timeout(),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_keeps_the_upper_half() {
        let h = Webhook {
            backoff_seconds: 1.0,
            max_backoff_seconds: 10.0,
            ..hook("http://h")
        };
        let full: Vec<f64> = (1..=6)
            .map(|n| h.retry_delay(n, 1.0).as_secs_f64())
            .collect();
        assert_eq!(full, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]);
        assert_eq!(h.retry_delay(3, 0.0).as_secs_f64(), 2.0);
        assert_eq!(h.retry_delay(3, 0.5).as_secs_f64(), 3.0);
        // Out-of-range jitter and absurd attempt numbers stay bounded.
        assert_eq!(h.retry_delay(3, 7.0).as_secs_f64(), 4.0);
        assert_eq!(h.retry_delay(u32::MAX, 1.0).as_secs_f64(), 10.0);
        assert_eq!(h.retry_delay(0, 1.0).as_secs_f64(), 1.0);
    }

    #[test]
    fn each_bad_field_is_named() {
        let ok = hook("https://hooks.example.com/ctp?token=abc");
        assert_eq!(validate(std::slice::from_ref(&ok)), Ok(()));
        let cases: Vec<(Webhook, &str)> = vec![
            (
                Webhook {
                    events: vec!["task.succeeded".into(), "task.done".into()],
                    ..ok.clone()
                },
                "webhooks[0].events: unknown event \"task.done\" (known: task.succeeded, \
                 task.failed, task.cancelled, task.preempted, version.rejected, head.moved, \
                 quota.exceeded)",
            ),
            (
                Webhook {
                    events: vec![],
                    ..ok.clone()
                },
                "webhooks[0].events is empty",
            ),
            (hook("ftp://h/x"), "must be an http:// or https:// URL"),
            (
                hook("not a url"),
                "webhooks[0].url: relative URL without a base",
            ),
            (
                Webhook {
                    secret: "short".into(),
                    ..ok.clone()
                },
                "webhooks[0].secret is shorter than 16 characters",
            ),
            (
                Webhook {
                    max_attempts: 0,
                    ..ok.clone()
                },
                "webhooks[0].max_attempts must be in 1..=100 (got 0)",
            ),
            (
                Webhook {
                    backoff_seconds: f64::NAN,
                    ..ok.clone()
                },
                "webhooks[0].backoff_seconds must be in (0, 86400]",
            ),
            (
                Webhook {
                    backoff_seconds: 30.0,
                    max_backoff_seconds: 5.0,
                    ..ok.clone()
                },
                "webhooks[0].max_backoff_seconds (5) is below backoff_seconds (30)",
            ),
        ];
        for (h, message) in cases {
            let e = validate(&[h]).unwrap_err();
            assert!(e.contains(message), "{e}\nwanted: {message}");
            assert!(!e.contains("token=abc"), "{e}");
        }
        let e = validate(&[ok.clone(), hook("http://other"), ok.clone()]).unwrap_err();
        assert_eq!(
            e,
            "webhooks[2].url \"https://hooks.example.com/ctp\" is also webhooks[0]'s (a URL \
             names one webhook)"
        );
    }

    /// `[[webhooks]]` in the TOML file and the whole list in `CTP__WEBHOOKS`; errors from
    /// either name the entry and the field.
    #[test]
    fn webhooks_load_from_the_file_and_the_environment() {
        use crate::config::{Overrides, Settings};
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        let file = |events: &str, extra: &str| {
            let text = format!(
                "[[webhooks]]\nurl = \"https://a.example/hook\"\nevents = [{events}]\n\
                 secret = \"0123456789abcdef\"\n{extra}\n[[webhooks]]\nurl = \"http://b:8080/\"\n\
                 events = [\"head.moved\"]\nsecret = \"fedcba9876543210\"\nmax_attempts = 3\n"
            );
            std::fs::write(&f, text).unwrap();
            Settings::load(Some(&f), vec![], &Overrides::default())
        };
        let s = file("\"task.failed\", \"version.rejected\"", "").unwrap();
        assert_eq!(s.webhooks.len(), 2);
        assert_eq!(s.webhooks[0].events, ["task.failed", "version.rejected"]);
        assert_eq!(s.webhooks[0].max_attempts, 12);
        assert_eq!(s.webhooks[1].max_attempts, 3);
        let r = routes(&s.webhooks);
        assert_eq!(r.endpoints(), ["https://a.example/hook", "http://b:8080/"]);
        assert!(r.wants(WebhookEvent::VersionRejected) && !r.wants(WebhookEvent::TaskSucceeded));
        let e = file("\"task.failed\", \"task.finished\"", "").unwrap_err();
        assert!(
            e.starts_with("webhooks[0].events: unknown event \"task.finished\" (known: "),
            "{e}"
        );
        let e = file("\"task.failed\"", "retries = 3").unwrap_err();
        assert!(e.contains("unknown field `retries`"), "{e}");
        let env = |v: &str| {
            Settings::load(
                None,
                vec![("CTP__WEBHOOKS".into(), v.into())],
                &Overrides::default(),
            )
        };
        let s = env(
            "[{url = \"http://127.0.0.1:9/x\", events = [\"task.cancelled\"], \
             secret = \"0123456789abcdef\", backoff_seconds = 0.1}]",
        )
        .unwrap();
        assert_eq!(s.webhooks[0].backoff_seconds, 0.1);
        let e = env("[{url = \"http://h/\", events = [\"task.cancelled\"]}]").unwrap_err();
        assert!(e.contains("missing field `secret`"), "{e}");
    }

    #[test]
    fn secrets_and_url_credentials_stay_out_of_debug_output() {
        let h = hook("https://user:pw@h.example/x?key=k");
        let shown = format!("{h:?}");
        for secret in ["0123456789abcdef", "pw", "key=k"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("https://h.example/x"), "{shown}");
    }
}
