//! An HTTP client whose connections come from a chosen loopback address, so that Envoy sees a
//! real, distinct downstream address per simulated client (127.0.0.2, 127.0.0.3, ...).

use crate::eventually;
use std::net::IpAddr;
use std::time::Duration;

/// A client bound to one source address.
pub struct Client {
    inner: reqwest::Client,
    /// The source address every request comes from.
    pub source: IpAddr,
}

/// What a request got back.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Response headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Response body as text.
    pub body: String,
}

impl Response {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    /// A client whose requests come from `source` (any 127.0.0.0/8 address works on Linux).
    pub fn from(source: &str) -> Self {
        let source: IpAddr = source.parse().expect("source address");
        let inner = reqwest::Client::builder()
            .no_proxy()
            .local_address(source)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Client { inner, source }
    }

    /// GETs `url` with extra request headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Response {
        self.try_get_with(url, headers)
            .await
            .unwrap_or_else(|e| panic!("GET {url} from {}: {e}", self.source))
    }

    /// GETs `url`.
    pub async fn get(&self, url: &str) -> Response {
        self.get_with(url, &[]).await
    }

    /// GETs `url` with extra request headers, returning transport errors.
    pub async fn try_get_with(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, String> {
        let mut request = self.inner.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// Sends any request built from this client's inner `reqwest::Client`.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, String> {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.text().await.map_err(|e| e.to_string())?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Waits until a GET of `url` gets `status` (a ban reaching Envoy, a ban expiring); a
    /// transport error is one more try.
    pub async fn wait_for_status(&self, url: &str, status: u16) {
        eventually(
            &format!("{} to get {status} from {url}", self.source),
            || async {
                let got = self.try_get_with(url, &[]).await?.status;
                if got == status {
                    Ok(())
                } else {
                    Err(format!("got {got}"))
                }
            },
        )
        .await;
    }

    /// The underlying client, for methods other than GET.
    pub fn inner(&self) -> &reqwest::Client {
        &self.inner
    }
}
