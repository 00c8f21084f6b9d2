//! The operator console in a real browser: Chromium, driven through
//! chromedriver (WebDriver, by fantoccini), against a real `edgerec serve`.
//! A walk through the console as an operator uses it (log in, see the demo
//! tenant, activate an older pipeline version and confirm through the API
//! that it serves, upload a plugin and see it listed, run try it and see the
//! trace, issue a key and use it), and the refusals (a wrong token, a
//! forged cross-site POST, a form without its CSRF token, a logged-out
//! session). The walk also takes the README's screenshots (docs/console/).
//!
//! Chromium and chromedriver come from Debian (`apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them on PATH these
//! tests fail when `CI` or `EDGEREC_REQUIRE_BROWSER` is set, and are
//! skipped, saying so, otherwise.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgerec_e2e::{DEMO_KEY, OPERATOR, Options, Scratch, Server};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// The demo's in-stock stage.
fn in_stock() -> Value {
    json!({"plugin": "in-stock", "config": {"attribute": "stock", "min": 1}})
}

/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";

/// Whether a missing browser must fail the test (CI) rather than skip it.
fn browser_required() -> bool {
    ["CI", "EDGEREC_REQUIRE_BROWSER"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"))
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |name| dir.join(name))).find(|p| p.is_file())
}

/// Chromium and chromedriver, or `None` (after failing in CI or saying why it skips).
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = on_path(&["chromedriver"]);
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        (chromium, driver) => {
            let missing: Vec<&str> = [(chromium.is_none(), "chromium"), (driver.is_none(), "chromedriver")]
                .iter()
                .filter(|m| m.0)
                .map(|m| m.1)
                .collect();
            let message = format!(
                "the console's browser tests need {} on PATH: install them (Debian: apt-get install chromium chromium-driver; .ci/run does)",
                missing.join(" and ")
            );
            assert!(
                !browser_required(),
                "{message} (CI or EDGEREC_REQUIRE_BROWSER is set, so this fails rather than skips)"
            );
            eprintln!("skipping: {message}");
            None
        }
    }
}

/// A chromedriver on a loopback port of its own; stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(driver: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on port {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session, and the runtime its client runs on (the
/// harness around it is blocking: each browser step is one `block_on`).
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    _driver: Driver,
}

impl Browser {
    fn start(chromium: &Path, driver: &Path) -> Browser {
        let driver = Driver::start(driver);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,820", "--hide-scrollbars"],
            }),
        );
        let client = runtime
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&driver.url),
            )
            .expect("a Chromium session through chromedriver");
        Browser { runtime, client: Some(client), _driver: driver }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn goto(&self, url: &str) {
        self.runtime.block_on(self.client().goto(url)).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    fn url(&self) -> String {
        self.runtime.block_on(self.client().current_url()).unwrap().to_string()
    }

    /// Waits (up to 30 s) for an element matching `css`.
    fn wait(&self, css: &str) -> fantoccini::elements::Element {
        let wait = self.client().wait().at_most(Duration::from_secs(30)).for_element(Locator::Css(css));
        self.runtime.block_on(wait).unwrap_or_else(|e| panic!("no {css} appeared: {e}; page:\n{}", self.source()))
    }

    fn click(&self, css: &str) {
        let element = self.wait(css);
        self.runtime.block_on(element.click()).unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.wait(css);
        self.runtime.block_on(element.send_keys(text)).unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    fn text(&self, css: &str) -> String {
        let element = self.wait(css);
        self.runtime.block_on(element.text()).unwrap()
    }

    fn source(&self) -> String {
        self.runtime.block_on(self.client().source()).unwrap_or_default()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.runtime.block_on(self.client().get_named_cookie(name)).ok().map(|c| c.value().to_string())
    }

    /// Evaluates `script` in the page (WebDriver's own channel: the page's CSP does not apply).
    fn eval(&self, script: &str) -> Value {
        self.runtime.block_on(self.client().execute(script, Vec::new())).unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// A screenshot of the window for the README.
    fn screenshot(&self, name: &str) {
        let png = self.runtime.block_on(self.client().screenshot()).expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }

    /// Every visible form control has a label (or an aria-label).
    fn assert_labelled(&self, page: &str) {
        let unlabelled = self.eval(
            "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button'))
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !(e.tagName === 'BUTTON' && e.textContent.trim()))
                .map(e => e.outerHTML);",
        );
        assert_eq!(unlabelled, json!([]), "controls without a label on {page}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
    }
}

fn login(browser: &Browser, server: &Server, token: &str) {
    browser.goto(&format!("{}/console", server.base));
    // From the keyboard: type the token, press Enter.
    browser.type_into("#token", token);
    browser.type_into("#token", ENTER);
}

fn active_pipeline(server: &Server) -> u64 {
    let (status, history) = server.get("/v1/tenants/demo/pipeline", Some(OPERATOR));
    assert_eq!(status, 200, "{history}");
    history["active"].as_u64().unwrap()
}

#[test]
fn an_operator_walks_through_the_console_in_a_browser() {
    let Some((chromium, driver)) = browser_tools() else { return };
    let scratch = Scratch::new();
    let server = Server::start(&scratch.path("data"), &Options { demo: true, ..Default::default() });
    // A second pipeline version (in-stock alone), so that the demo's first is an older one.
    let (status, body) =
        server.json("PUT", "/v1/tenants/demo/pipeline", Some(OPERATOR), &json!({"stages": [in_stock()]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(active_pipeline(&server), 2);
    // A few recommends, so that the charts and the stage costs have something to show.
    for item in ["sku-00001", "sku-00002", "sku-00003"] {
        let request = json!({"events": [{"item": item, "ts": 1_700_000_000}], "k": 5});
        assert_eq!(server.json("POST", "/v1/tenants/demo/recommend", Some(DEMO_KEY), &request).0, 200);
    }

    let browser = Browser::start(&chromium, &driver);
    browser.goto(&format!("{}/console/tenants", server.base));
    assert!(browser.url().ends_with("/console/login"), "not logged in: sent to the login form, at {}", browser.url());
    browser.wait("#token");
    browser.assert_labelled("the login form");
    browser.screenshot("login.png");

    // Log in; the overview lists the demo tenant, serving, on pipeline version 2.
    login(&browser, &server, OPERATOR);
    browser.wait("a[href='/console/tenants/demo']");
    assert!(browser.url().ends_with("/console/tenants"), "{}", browser.url());
    let overview = browser.text("table");
    assert!(overview.contains("demo") && overview.contains("serving") && overview.contains("version 2"), "{overview}");
    browser.screenshot("tenants.png");

    // The tenant's page: its active pipeline's stages, and charts of the recommends made above.
    browser.click("a[href='/console/tenants/demo']");
    browser.wait("#pipeline");
    let stages = browser.text("#pipeline table");
    assert!(stages.contains("in-stock@1"), "{stages}");
    assert!(browser.source().contains("<polyline"), "the charts draw the recommends made above");
    browser.assert_labelled("the tenant page");

    // Activate the older version with its button, after the confirmation that shows the difference.
    browser.click("#pipeline-v1 summary");
    let confirmation = browser.text("#pipeline-v1 details");
    assert!(confirmation.contains("exclude-recent@1") && confirmation.contains("diversity@1"), "{confirmation}");
    browser.click("#confirm-activate-1");
    let flash = browser.text("p.flash.done");
    assert!(flash.contains("Pipeline version 1 is active"), "{flash}");
    // The API says it serves, and a storefront recommend is answered by it.
    assert_eq!(active_pipeline(&server), 1);
    let (status, answer) = server.json(
        "POST",
        "/v1/tenants/demo/recommend",
        Some(DEMO_KEY),
        &json!({"events": [{"item": "sku-00001", "ts": 1_700_000_000}], "k": 5, "explain": true}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pipeline_version"], 1, "{answer}");

    // Upload a plugin through the form: the check's result is shown and the version listed.
    let component = scratch.path("my-boost.wasm");
    std::fs::write(&component, edgerec_runtime::first_party::BOOST).unwrap();
    browser.type_into("#plugin-name", "my-boost");
    browser.type_into("#plugin-file", component.to_str().unwrap());
    // The component declares the name "boost": storing it as my-boost needs the box ticked.
    browser.click("#plugin-replace");
    browser.click("#plugin-upload");
    let flash = browser.text("p.flash.done");
    assert!(flash.contains("Plugin my-boost version 1 stored"), "{flash}");
    assert!(browser.text("#plugin-list").contains("my-boost"), "the new version is listed");
    let (_, plugins) = server.get("/v1/tenants/demo/plugins", Some(OPERATOR));
    assert!(plugins["plugins"].as_array().unwrap().iter().any(|p| p["name"] == "my-boost"), "{plugins}");
    // A file that is not a component: refused, and the page says why.
    let junk = scratch.path("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    browser.type_into("#plugin-name", "junk");
    browser.type_into("#plugin-file", junk.to_str().unwrap());
    browser.click("#plugin-upload");
    let refusal = browser.text("p.flash.refused");
    assert!(refusal.starts_with("Refused:"), "{refusal}");

    // Activate it: a new pipeline version with the plugin as a stage.
    browser.click("#pipeline-new summary");
    browser.eval("document.getElementById('pipeline-stages').value = ''; return null;");
    let stages = json!({"stages": [
        in_stock(),
        {"plugin": "my-boost", "config": {"rules": [
            {"name": "bury-iris", "attribute": "brand", "op": "eq", "value": "Iris", "action": "bury"}
        ]}},
    ]});
    browser.type_into("#pipeline-stages", &stages.to_string());
    browser.click("#pipeline-activate");
    let flash = browser.text("p.flash.done");
    assert!(flash.contains("Pipeline version 3 stored and active"), "{flash}");
    assert_eq!(active_pipeline(&server), 3);

    // Try it: a recommend with explain, its trace as a table.
    browser.type_into("#try-items", "sku-00001, sku-00002");
    browser.eval("document.getElementById('try-k').value = ''; return null;");
    browser.type_into("#try-k", "4");
    browser.click("#try-run");
    let trace = browser.text("#trace");
    assert_eq!(browser.eval("return document.querySelectorAll('#try-result table')[0].tBodies[0].rows.length;"), 4);
    for stage in ["in-stock@1", "my-boost@1"] {
        assert!(trace.contains(stage), "{stage} missing from the trace:\n{trace}");
    }
    assert!(!trace.contains("skipped") && !trace.contains("failed"), "every stage ran:\n{trace}");
    browser.eval("document.getElementById('try-result').scrollIntoView(); return null;");
    browser.screenshot("try-it.png");

    // Watch its stage's cost: the try-it call above is in the server's own metrics.
    browser.goto(&format!("{}/console/tenants/demo", server.base));
    let row = browser.text("#pipeline tbody tr:nth-child(2)");
    assert!(row.contains("my-boost@1"), "{row}");
    let calls: u64 = browser.text("#pipeline tbody tr:nth-child(2) td:nth-child(6)").parse().unwrap();
    assert!(calls >= 1, "my-boost's calls: {row}");
    browser.screenshot("tenant.png");

    // Roll it back, after the confirmation that shows what leaves.
    browser.click("#pipeline-rollback summary");
    let confirmation = browser.text("#pipeline-rollback");
    assert!(confirmation.contains("- stage 1: my-boost@1"), "{confirmation}");
    browser.click("#confirm-rollback");
    let flash = browser.text("p.flash.done");
    assert!(flash.contains("Rolled back: pipeline version 1 is active"), "{flash}");
    assert_eq!(active_pipeline(&server), 1);

    // Issue a key: shown once, and it opens the storefront routes.
    browser.click("#key-issue");
    let secret = browser.text("p.flash.secret");
    let key = secret.split_whitespace().find(|w| w.starts_with("ek_")).unwrap_or_else(|| panic!("no key in {secret}"));
    let request = json!({"events": [{"item": "sku-00001", "ts": 1_700_000_000}], "k": 3});
    assert_eq!(server.json("POST", "/v1/tenants/demo/recommend", Some(key), &request).0, 200);
    browser.goto(&format!("{}/console/tenants/demo", server.base));
    assert!(!browser.source().contains(key), "a new key is shown once");
}

/// A tiny page on another origin with a form aimed at the console, as a
/// malicious site would serve it; answers every connection the same page.
fn serve_attacker_page(target: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let page = format!(
        "<!doctype html><html><body><form id=\"forged\" method=\"post\" action=\"{target}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"guessed\"><button id=\"go\">win a prize</button></form></body></html>"
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{address}/")
}

#[test]
fn wrong_tokens_forged_posts_and_ended_sessions_are_refused() {
    let Some((chromium, driver)) = browser_tools() else { return };
    let scratch = Scratch::new();
    let server = Server::start(&scratch.path("data"), &Options { demo: true, ..Default::default() });
    let browser = Browser::start(&chromium, &driver);

    // A wrong token, and a storefront key: the form again, no session.
    for wrong in ["eo_not_the_token", DEMO_KEY] {
        login(&browser, &server, wrong);
        let refusal = browser.text("p.flash.refused");
        assert!(refusal.contains("not the operator token"), "{refusal}");
        assert!(browser.url().ends_with("/console/login"), "{}", browser.url());
        assert_eq!(browser.cookie("edgerec_console"), None, "no session for {wrong}");
        assert!(!browser.source().contains(wrong), "the presented secret is not echoed");
    }

    // Logged in, the operator visits another site whose form posts to the console.
    login(&browser, &server, OPERATOR);
    browser.wait("a[href='/console/tenants/demo']");
    let session = browser.cookie("edgerec_console").expect("a session cookie");
    let (status, body) = server.json("PUT", "/v1/tenants/demo/pipeline", Some(OPERATOR), &json!({"stages": []}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(active_pipeline(&server), 2);
    let attacker = serve_attacker_page(&format!("{}/console/tenants/demo/pipeline/rollback", server.base));
    browser.goto(&attacker);
    browser.click("#go");
    let refusal = browser.text("h1");
    assert!(refusal.contains("did not come from this console"), "{refusal}");
    assert_eq!(active_pipeline(&server), 2, "the forged rollback changed nothing");

    // The login's cookie without the form's CSRF token (no Origin: not a browser): refused too.
    let client = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let post = |form: &[(&str, &str)]| {
        client
            .post(format!("{}/console/tenants/demo/pipeline/rollback", server.base))
            .header("cookie", format!("edgerec_console={session}"))
            .form(form)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post(&[]), 403, "no CSRF token");
    assert_eq!(post(&[("csrf", "ct_guessed")]), 403, "a wrong CSRF token");
    assert_eq!(active_pipeline(&server), 2);
    // Positive control: the token from the login's own page rolls back.
    browser.goto(&format!("{}/console/tenants/demo", server.base));
    let csrf = browser.eval("return document.querySelector('input[name=csrf]').value;");
    assert_eq!(post(&[("csrf", csrf.as_str().unwrap())]), 303);
    assert_eq!(active_pipeline(&server), 1);

    // Every console answer carries the policy that allows only its own assets.
    let response = client.get(format!("{}/console/login", server.base)).send().unwrap();
    let policy = response.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("default-src 'none'") && policy.contains("style-src 'self'"), "{policy}");

    // Logout ends the session: its cookie opens nothing afterwards.
    browser.click("header form button");
    browser.wait("#token");
    let page = client
        .get(format!("{}/console/tenants", server.base))
        .header("cookie", format!("edgerec_console={session}"))
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 303);
    assert_eq!(page.headers()["location"], "/console/login");
    // The operator token appeared in no page, URL or log line.
    let log = std::fs::read_to_string(scratch.path("data").with_extension("log")).unwrap_or_default();
    assert!(!log.contains(OPERATOR), "the operator token is in the server log");
    assert!(!server.stdout_lines().iter().any(|l| l.contains(OPERATOR)));
}
