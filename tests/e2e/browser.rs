//! A WebDriver harness for the browser tests of the member portal: Debian's headless
//! chromium driven through its chromedriver (fantoccini), one driver process per test on
//! a free loopback port, killed when the test is done, and a PNG screenshot of every page
//! a test looks at under `target/screenshots/<test>/<nn>-<page>.png` (CI keeps them as
//! artefacts; `/target` is git-ignored).
//!
//! The driver is found at `CHROMEDRIVER` or `/usr/bin/chromedriver` (`.ci/run` installs
//! `chromium-driver`). Where it is missing, a test is skipped with a printed notice —
//! except under `CI=true`, where a missing browser fails loudly: CI must run them.
//!
//! Everything waits for what it needs (an element, a URL, a text) with a deadline instead
//! of sleeping, so the tests hold on a loaded 2-core machine; the deadline is generous
//! (`BROWSER_WAIT`) because a cold chromium there can take seconds to paint a page.

use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client as WebDriver, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long any wait for the page (an element, a URL, a text) may take.
pub const BROWSER_WAIT: Duration = Duration::from_secs(30);

/// A phone (Pixel 7-sized CSS viewport) and a desktop window.
#[derive(Clone, Copy, Debug)]
pub enum Screen {
    Phone,
    Desktop,
}

impl Screen {
    fn window_size(self) -> &'static str {
        match self {
            Screen::Phone => "412,915",
            Screen::Desktop => "1280,900",
        }
    }
}

/// One browser at a time across the test binary: two chromiums plus the servers of the
/// other tests on 2 cores make page loads slow enough to be flaky, and the browser
/// tests are few. A tokio semaphore, since each test has its own runtime.
static ONE_BROWSER: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The chromedriver to use, or `None` (with a notice) when this machine has none and
/// this is not CI. Under `CI=true` a missing driver is a failure, not a skip.
pub fn chromedriver() -> Option<PathBuf> {
    let configured = std::env::var_os("CHROMEDRIVER").filter(|p| !p.is_empty());
    let path = configured
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but no chromedriver at {} (set CHROMEDRIVER or install Debian's \
             chromium-driver, as .ci/run does): the browser tests must run in CI",
            path.display()
        );
    }
    eprintln!(
        "NOTICE: browser test skipped: no chromedriver at {} (apt-get install chromium \
         chromium-driver, or set CHROMEDRIVER)",
        path.display()
    );
    None
}

/// The chromium binary the driver should start (Debian's, unless `CHROME` names one).
fn chrome_binary() -> Option<String> {
    if let Some(path) = std::env::var("CHROME").ok().filter(|p| !p.is_empty()) {
        return Some(path);
    }
    ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| (*p).to_owned())
}

/// A chromedriver process on its own loopback port; killed (and reaped) when dropped.
struct Driver {
    child: Child,
    url: String,
    /// The WebDriver session still open on it, if any.
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A test that failed half-way never closed its session: ending it here makes the
        // driver quit its chromium, which killing the driver alone would orphan.
        if let Some(session) = self.session.take() {
            delete_session(&self.url, &session);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `DELETE /session/{id}` on the driver, blocking (it runs in `Drop`, possibly while a
/// panicking test unwinds its runtime), bounded by short timeouts.
fn delete_session(driver_url: &str, session: &str) {
    use std::io::{Read, Write};
    let Some(address) = driver_url.strip_prefix("http://") else {
        return;
    };
    let Ok(addr) = address.parse::<std::net::SocketAddr>() else {
        return;
    };
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
}

impl Driver {
    async fn start(binary: &Path) -> Driver {
        // A port the OS just handed out; another process could take it before the driver
        // binds it, so a driver that never answers is retried on a new port.
        for attempt in 1..=3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new(binary)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let driver = Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
                session: None,
            };
            if driver.ready().await {
                return driver;
            }
            eprintln!("chromedriver on port {port} never became ready (attempt {attempt})");
        }
        panic!("chromedriver {} did not start", binary.display());
    }

    /// Polls the driver's `/status` until it says it is ready.
    async fn ready(&self) -> bool {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let status = http
                .get(format!("{}/status", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(res) = status {
                if let Ok(body) = res.json::<Value>().await {
                    if body["value"]["ready"] == json!(true) {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// A headless chromium for one test: its driver, the WebDriver session, and where its
/// screenshots go. Several may be open in one test (two members side by side); they
/// share the test's slot.
pub struct Browser {
    pub wd: WebDriver,
    /// The server under test, e.g. `http://127.0.0.1:PORT`.
    pub base: String,
    shots: PathBuf,
    shots_taken: Arc<AtomicUsize>,
    label: String,
    // Dropped after the session is closed (see `close`) or, on a failed test, with it.
    _driver: Driver,
}

/// Where screenshots go: `<target dir>/screenshots/<test>/`.
fn screenshot_dir(test: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots").join(test)
}

/// The slot a browser test holds while its browsers run.
pub struct BrowserSlot {
    _permit: tokio::sync::SemaphorePermit<'static>,
    driver: PathBuf,
    test: String,
    /// Numbers screenshots across every browser of the test, so two members' pages
    /// sort in the order they were taken.
    shots_taken: Arc<AtomicUsize>,
}

/// Takes the browser slot for `test`, or `None` when browser tests are skipped here
/// (no chromedriver outside CI). The screenshot folder of the test starts empty.
pub async fn browser_slot(test: &str) -> Option<BrowserSlot> {
    let driver = chromedriver()?;
    let permit = ONE_BROWSER.acquire().await.expect("browser semaphore");
    let dir = screenshot_dir(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    Some(BrowserSlot {
        _permit: permit,
        driver,
        test: test.to_owned(),
        shots_taken: Arc::default(),
    })
}

impl BrowserSlot {
    /// A new headless chromium of `screen` size against the server at `base`; `label`
    /// tells its screenshots apart from another browser's in the same test.
    pub async fn open(&self, base: &str, screen: Screen, label: &str) -> Browser {
        let driver = Driver::start(&self.driver).await;
        let mut chrome = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                // Every name but loopback fails at once: the browser reaches nothing
                // beyond this machine (a page asking for an outside resource would
                // otherwise hold its load event until that times out).
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                format!("--window-size={}", screen.window_size()),
                // English unless a test switches: the portal picks the language from
                // Accept-Language, which follows this.
                "--lang=en-GB",
            ],
            "prefs": {"intl.accept_languages": "en-GB,en"},
        });
        if let Screen::Phone = screen {
            // Headless chromium keeps windows at least 500 px wide whatever
            // --window-size says; the phone's viewport comes from device emulation
            // (412 CSS px wide, touch, the mobile viewport meta honoured).
            chrome["mobileEmulation"] = json!({
                "deviceMetrics": {"width": 412, "height": 915, "pixelRatio": 1.0,
                                  "mobile": true, "touch": true}
            });
        }
        if let Some(binary) = chrome_binary() {
            chrome["binary"] = json!(binary);
        }
        let mut caps = Capabilities::new();
        caps.insert("goog:chromeOptions".to_owned(), chrome);
        caps.insert("pageLoadStrategy".to_owned(), json!("normal"));
        let mut driver = driver;
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let wd = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("WebDriver session on {}: {e}", driver.url));
        driver.session = wd.session_id().await.ok().flatten();
        Browser {
            wd,
            base: base.trim_end_matches('/').to_owned(),
            shots: screenshot_dir(&self.test),
            shots_taken: self.shots_taken.clone(),
            label: label.to_owned(),
            _driver: driver,
        }
    }
}

impl Browser {
    /// Closes the WebDriver session (the chromium), then the driver goes with `self`.
    pub async fn close(self) {
        let Browser {
            wd, mut _driver, ..
        } = self;
        if wd.close().await.is_ok() {
            _driver.session = None;
        }
        drop(_driver);
    }

    /// Opens `path` on the server under test and waits until the document is loaded.
    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.wd
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("navigating to {url}: {e}"));
        self.loaded().await;
    }

    /// Waits for `document.readyState == "complete"`.
    pub async fn loaded(&self) {
        self.wait_until("the page to load", || async {
            self.wd
                .execute("return document.readyState", vec![])
                .await
                .ok()
                .is_some_and(|s| s == json!("complete"))
        })
        .await;
    }

    /// Polls `ready` every 100 ms until it holds, failing the test (with a screenshot)
    /// after `BROWSER_WAIT`.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut ready: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            if ready().await {
                return;
            }
            if Instant::now() >= deadline {
                self.shot("timeout").await;
                let url = self.path().await;
                let body = self.body_text().await;
                panic!("waited {BROWSER_WAIT:?} for {what} on {url}; the page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `css` names, once it is on the page.
    pub async fn find(&self, css: &str) -> Element {
        let found = std::sync::Mutex::new(None);
        self.wait_until(&format!("element {css}"), || async {
            let element = self.wd.find(Locator::Css(css)).await.ok();
            let there = element.is_some();
            *found.lock().unwrap() = element;
            there
        })
        .await;
        found.into_inner().unwrap().expect("found")
    }

    /// Whether `css` names an element on the page right now (no waiting).
    pub async fn has(&self, css: &str) -> bool {
        self.wd
            .find_all(Locator::Css(css))
            .await
            .is_ok_and(|all| !all.is_empty())
    }

    /// The visible text of `css`, once it is on the page.
    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// Types `text` into the field `css` (cleared first).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.ok();
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Clicks `css` (a link or a submit button) and waits until the page it leads to has
    /// replaced this one and loaded. The old document is marked first: right after a
    /// click the old page is still "complete", and an error message or a field found
    /// then could be the old page's.
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.mark_document().await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
        self.wait_for_new_document(&format!("the page after clicking {css}"))
            .await;
    }

    /// Marks the current document (see `click`).
    pub async fn mark_document(&self) {
        self.wd
            .execute(
                "document.documentElement.setAttribute('data-harness-old', '1')",
                vec![],
            )
            .await
            .expect("marking the page");
    }

    /// Waits until a document without the mark has loaded.
    pub async fn wait_for_new_document(&self, what: &str) {
        self.wait_until(what, || async {
            self.wd
                .execute(
                    "return !document.documentElement.hasAttribute('data-harness-old') \
                     && document.readyState === 'complete'",
                    vec![],
                )
                .await
                .ok()
                .is_some_and(|v| v == json!(true))
        })
        .await;
    }

    /// Keys pressed on the keyboard, going to whatever has the focus (Tab moves it,
    /// Enter submits): WebDriver key actions, as a person types, not a value set on an
    /// element. `fantoccini::key::Key` gives the special keys (`Key::Tab.into()`).
    pub async fn keys(&self, keys: &str) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let mut actions = KeyActions::new("keyboard".to_owned());
        for value in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value })
                .then(KeyAction::Up { value });
        }
        self.wd
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("typing {keys:?}: {e}"));
    }

    /// The focused element's `attribute`.
    pub async fn focused_attr(&self, attribute: &str) -> Option<String> {
        let el = self.wd.active_element().await.ok()?;
        el.attr(attribute).await.ok().flatten()
    }

    /// The whole page's visible text.
    pub async fn body_text(&self) -> String {
        match self.wd.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the page's visible text contains `needle`.
    pub async fn wait_for_text(&self, needle: &str) {
        self.wait_until(&format!("the text {needle:?}"), || async {
            self.body_text().await.contains(needle)
        })
        .await;
    }

    /// The path (and query) of the current page.
    pub async fn path(&self) -> String {
        match self.wd.current_url().await {
            Ok(url) => match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            },
            Err(e) => format!("<no url: {e}>"),
        }
    }

    /// Waits until the current path (without the query) is `path`.
    pub async fn wait_for_path(&self, path: &str) {
        self.wait_until(&format!("the path {path}"), || async {
            self.wd
                .current_url()
                .await
                .is_ok_and(|url| url.path() == path)
        })
        .await;
        self.loaded().await;
    }

    /// The value of the cookie `name` in this browser, if it has one.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        self.wd
            .get_named_cookie(name)
            .await
            .ok()
            .map(|c| c.value().to_owned())
    }

    /// Saves a screenshot of the page as `<nn>-<label>-<page>.png`.
    pub async fn shot(&self, page: &str) {
        let n = self.shots_taken.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("{n:02}-{}-{page}.png", self.label);
        match self.wd.screenshot().await {
            Ok(png) => {
                std::fs::create_dir_all(&self.shots).ok();
                std::fs::write(self.shots.join(&name), png)
                    .unwrap_or_else(|e| panic!("saving screenshot {name}: {e}"));
            }
            Err(e) => eprintln!("screenshot {name} failed: {e}"),
        }
    }

    /// Whether the page is wider than the window (a phone would scroll sideways).
    pub async fn overflows_horizontally(&self) -> bool {
        self.wd
            .execute(
                "return document.documentElement.scrollWidth > window.innerWidth + 1",
                vec![],
            )
            .await
            .is_ok_and(|v| v == json!(true))
    }
}

#[tokio::test]
async fn the_harness_drives_chromium_through_the_api_docs_on_a_phone_and_a_desktop() {
    let Some(slot) = browser_slot("harness_docs").await else {
        return;
    };
    let t = crate::support::spawn_app().await;
    for (screen, label) in [(Screen::Phone, "phone"), (Screen::Desktop, "desktop")] {
        let b = slot.open(&t.base, screen, label).await;
        b.goto("/docs/").await;
        // The screen really is the size asked for (the phone checks depend on it).
        // (The emulated phone's screen; the desktop's window: headless has an 800 px
        // virtual screen behind any window.)
        let script = match screen {
            Screen::Phone => "return window.screen.width",
            Screen::Desktop => "return window.innerWidth",
        };
        let width = b.wd.execute(script, vec![]).await.expect("width");
        let expected = if matches!(screen, Screen::Phone) {
            412
        } else {
            1280
        };
        assert_eq!(width, json!(expected), "{label} screen width");
        // Swagger UI renders the document's title client-side from /openapi.json.
        b.wait_for_text("Coalition").await;
        b.shot("docs").await;
        b.close().await;
    }
    let shots: Vec<_> = std::fs::read_dir(screenshot_dir("harness_docs"))
        .expect("screenshots")
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(shots.len(), 2, "one screenshot per page visited");
    for shot in shots {
        let png = std::fs::read(shot.path()).unwrap();
        assert_eq!(
            &png[..8],
            b"\x89PNG\r\n\x1a\n",
            "{:?} is a PNG",
            shot.path()
        );
    }
}
