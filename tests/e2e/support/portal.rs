//! Driving the member portal over HTTP as a browser would, with cookies kept by hand
//! (reqwest's cookie store is off, and redirects are not followed, so every Set-Cookie
//! and every 303 is seen by the test).

use super::smtp::SmtpSink;
use super::TestApp;
use std::collections::HashMap;
use uuid::Uuid;

/// How a member comes to the sign-in: through a partner's link, naming the programme,
/// or with neither (a server with one programme).
#[derive(Debug, Clone, Copy)]
pub enum Via {
    Partner(Uuid),
    Programme(Uuid),
    Nothing,
}

impl Via {
    fn fields(self) -> Vec<(&'static str, String)> {
        match self {
            Via::Partner(id) => vec![("partner", id.to_string())],
            Via::Programme(id) => vec![("programme", id.to_string())],
            Via::Nothing => vec![],
        }
    }

    fn query(self) -> String {
        self.fields()
            .into_iter()
            .map(|(k, v)| format!("&{k}={v}"))
            .collect()
    }
}

#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    /// The value of the hidden `csrf` field of the page's forms.
    pub fn csrf(&self) -> Option<String> {
        let at = self.body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        let end = self.body[at..].find('"')? + at;
        Some(self.body[at..end].to_owned())
    }

    /// The text of the element with this id (up to its first tag end), HTML left as is.
    pub fn element(&self, id: &str) -> Option<String> {
        let marker = format!("id=\"{id}\"");
        let at = self.body.find(&marker)?;
        let open_end = self.body[at..].find('>')? + at + 1;
        let close = self.body[open_end..].find("</")? + open_end;
        Some(self.body[open_end..close].trim().to_owned())
    }
}

/// A browser of one person: its own cookies.
#[derive(Clone)]
pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
    pub cookies: HashMap<String, String>,
    /// Sent as `Accept-Language` when set.
    pub accept_language: Option<String>,
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
        Browser::at(&app.base)
    }

    /// A browser of the server at `base` (e.g. a `coalition serve` process).
    pub fn at(base: &str) -> Browser {
        Browser {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            accept_language: None,
        }
    }

    fn cookie_header(&self) -> String {
        let mut pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.sort();
        pairs.join("; ")
    }

    fn keep_cookies(&mut self, headers: &reqwest::header::HeaderMap) {
        for value in headers.get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    async fn finish(&mut self, request: reqwest::RequestBuilder) -> Page {
        let mut request = request.header("cookie", self.cookie_header());
        if let Some(lang) = &self.accept_language {
            request = request.header("accept-language", lang);
        }
        let response = request.send().await.expect("portal request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        self.keep_cookies(&headers);
        let body = response.text().await.unwrap_or_default();
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.finish(request).await
    }

    /// A form POST, as the page's form would send it.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(fields);
        self.finish(request).await
    }

    /// A form POST with extra headers (e.g. a foreign `Origin`).
    pub async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(fields);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.finish(request).await
    }

    pub fn session(&self) -> Option<&str> {
        self.cookies.get("coalition_session").map(String::as_str)
    }

    /// Opens the sign-in page and asks for a code for `email`: the code page.
    pub async fn request_code(&mut self, via: Via, email: &str) -> Page {
        let form = self
            .get(&format!("/portal/sign-in?next=%2Fportal{}", via.query()))
            .await;
        assert_eq!(form.status, 200, "sign-in page: {}", form.body);
        let csrf = form.csrf().expect("the sign-in form carries a csrf token");
        let via_fields = via.fields();
        let mut fields: Vec<(&str, &str)> =
            vec![("email", email), ("csrf", &csrf), ("next", "/portal")];
        fields.extend(via_fields.iter().map(|(k, v)| (*k, v.as_str())));
        self.post("/portal/sign-in", &fields).await
    }

    /// Sends a code from the code page (`page`) for `email`.
    pub async fn submit_code(&mut self, via: Via, email: &str, code: &str) -> Page {
        let csrf = self
            .cookies
            .get("coalition_csrf")
            .cloned()
            .expect("csrf cookie");
        let via_fields = via.fields();
        let mut fields: Vec<(&str, &str)> = vec![
            ("email", email),
            ("code", code),
            ("csrf", &csrf),
            ("next", "/portal"),
        ];
        fields.extend(via_fields.iter().map(|(k, v)| (*k, v.as_str())));
        self.post("/portal/sign-in/code", &fields).await
    }

    /// Signs in with the code mailed to `email`; panics unless it works.
    pub async fn sign_in(&mut self, sink: &SmtpSink, via: Via, email: &str) -> String {
        let seen = sink.messages_to(email).len();
        let page = self.request_code(via, email).await;
        assert_eq!(page.status, 200, "code page: {}", page.body);
        let code = sink.next_code_for(email, seen).await;
        let done = self.submit_code(via, email, &code).await;
        assert_eq!(done.status, 303, "sign-in: {}", done.body);
        self.session()
            .expect("a session cookie after sign-in")
            .to_owned()
    }
}

/// Signs `email` in through `via` with the code from `sink`; the `coalition_session`
/// cookie's value.
#[allow(dead_code)]
pub async fn sign_in(app: &TestApp, sink: &SmtpSink, via: Via, email: &str) -> String {
    Browser::new(app).sign_in(sink, via, email).await
}
