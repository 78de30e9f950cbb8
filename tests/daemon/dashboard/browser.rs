//! Headless Chromium driven through chromedriver (WebDriver) with fantoccini. Finds the
//! browser and the driver, or says why the browser tests skip.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

/// The first existing executable of `names` (absolute, or looked up on PATH).
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        let p = PathBuf::from(n);
        if p.is_absolute() && p.is_file() {
            return Some(p);
        }
        for dir in std::env::split_paths(&path) {
            let c = dir.join(n);
            if c.is_file() {
                return Some(c);
            }
        }
    }
    None
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where screenshots go (`CTP_SCREENSHOTS`), if anywhere.
    shots: Option<PathBuf>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or returns why it cannot.
    pub async fn start() -> Result<Browser, String> {
        let chrome = std::env::var("CTP_CHROMIUM")
            .ok()
            .map(PathBuf::from)
            .or_else(|| {
                which(&[
                    "/usr/lib/chromium/chromium",
                    "chromium",
                    "chromium-browser",
                    "google-chrome",
                ])
            })
            .ok_or(
                "no Chromium found (apt-get install chromium chromium-driver, or set CTP_CHROMIUM)",
            )?;
        let driver_bin = std::env::var("CTP_CHROMEDRIVER")
            .ok()
            .map(PathBuf::from)
            .or_else(|| which(&["chromedriver", "/usr/lib/chromium/chromedriver"]))
            .ok_or(
                "no chromedriver found (apt-get install chromium-driver, or set CTP_CHROMEDRIVER)",
            )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", driver_bin.display()))?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chrome.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1440,1000"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = String::new();
        for _ in 0..100 {
            let conn = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(conn)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    let shots = std::env::var_os("CTP_SCREENSHOTS").map(PathBuf::from);
                    return Ok(Browser {
                        client,
                        driver,
                        shots,
                    });
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut driver = driver;
        let _ = driver.kill();
        Err(format!("chromedriver did not start a session: {last}"))
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Runs `js` (a function body; `arguments` are `args`) and returns its value.
    pub async fn js(&self, js: &str, args: Vec<Value>) -> Value {
        self.client.execute(js, args).await.unwrap()
    }

    /// Waits (up to `secs`) until `js` returns a truthy value; returns it.
    pub async fn wait(&self, what: &str, secs: u64, js: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.client.execute(js, vec![]).await.unwrap_or(Value::Null);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let body = self
                    .client
                    .execute("return document.body.innerText", vec![])
                    .await
                    .unwrap_or_default();
                panic!("waited {secs}s for {what}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clicks the element matching `css` (in the page, so dialogs work alike).
    pub async fn click(&self, css: &str) {
        let ok = self
            .js(
                "const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e;",
                vec![json!(css)],
            )
            .await;
        assert_eq!(ok, json!(true), "nothing to click at {css}");
    }

    /// Saves a screenshot as `name`.png when `CTP_SCREENSHOTS` names a folder.
    pub async fn shot(&self, name: &str) {
        let Some(dir) = &self.shots else { return };
        std::fs::create_dir_all(dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
