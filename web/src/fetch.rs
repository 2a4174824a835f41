//! Model files from URLs: fetched with the global `fetch` (a page or a Web Worker), streamed with
//! progress, verified against an optional SHA-256, and kept in Cache Storage so a second visit reads
//! them locally. A cached copy that fails its digest is dropped and fetched again once: a corrupt cache
//! must never turn into a permanent error.

use js_sys::{Object, Reflect, Uint8Array};
use sha2::{Digest, Sha256};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, CacheStorage, ReadableStreamDefaultReader, Response};

use crate::error::WebError;

/// The Cache Storage bucket model files live in.
pub const CACHE_NAME: &str = "chorus-models-v1";

/// One file to read: its URL and, optionally, the SHA-256 (hex) it must have.
#[derive(Debug, Clone)]
pub struct Remote {
    /// URL (absolute, or relative to the script that runs the module).
    pub url: String,
    /// Expected SHA-256 in lower-case hex.
    pub sha256: Option<String>,
}

/// Progress of one file: bytes so far, total when the server said (`None` otherwise), whether it came
/// from the cache.
pub type Progress<'a> = &'a mut dyn FnMut(&str, f64, Option<f64>, bool);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes` in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Checks `bytes` against `want` (hex, case-insensitive); names the URL at fault.
pub fn verify(url: &str, bytes: &[u8], want: Option<&str>) -> Result<(), WebError> {
    let Some(want) = want else { return Ok(()) };
    let want = want.trim().to_ascii_lowercase();
    if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WebError::Input(format!("{url}: sha256 {want:?} is not 64 hex digits")));
    }
    let got = sha256_hex(bytes);
    if got != want {
        return Err(WebError::Integrity { url: url.to_string(), want, got });
    }
    Ok(())
}

async fn wait(p: js_sys::Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

fn global() -> Object {
    js_sys::global()
}

/// The global `caches`, when this context has Cache Storage (it is absent on insecure origins).
async fn open_cache() -> Option<Cache> {
    let caches = Reflect::get(&global(), &"caches".into()).ok()?;
    let caches: CacheStorage = caches.dyn_into().ok()?;
    wait(caches.open(CACHE_NAME)).await.ok()?.dyn_into().ok()
}

/// The global `fetch`, called on the global object (Window or WorkerGlobalScope alike).
async fn fetch(url: &str) -> Result<Response, WebError> {
    let g = global();
    let f: js_sys::Function = Reflect::get(&g, &"fetch".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| WebError::Fetch { url: url.into(), reason: "this context has no fetch".into() })?;
    let p: js_sys::Promise = f
        .call1(&g, &JsValue::from_str(url))
        .map_err(|e| WebError::Fetch { url: url.into(), reason: crate::error::describe(&e) })?
        .unchecked_into();
    let r: Response = wait(p)
        .await
        .map_err(|e| {
            let mut reason = crate::error::describe(&e);
            // The browser gives every refused request the same TypeError; say where to look.
            if reason.contains("Failed to fetch") || reason.contains("NetworkError") {
                reason.push_str(
                    " (the request was refused before any response: the server is unreachable, or it sends no CORS \
                     header for this page, or the page's Content-Security-Policy `connect-src` does not list the \
                     URL's origin; the browser console names which)",
                );
            }
            WebError::Fetch { url: url.into(), reason }
        })?
        .unchecked_into();
    if !r.ok() {
        return Err(WebError::Fetch { url: url.into(), reason: format!("HTTP {} {}", r.status(), r.status_text()) });
    }
    Ok(r)
}

/// Reads a response body chunk by chunk, reporting progress after each.
async fn read_body(url: &str, r: &Response, cached: bool, progress: Progress<'_>) -> Result<Vec<u8>, WebError> {
    let ferr = |e: JsValue| WebError::Fetch { url: url.into(), reason: crate::error::describe(&e) };
    let total = r.headers().get("content-length").ok().flatten().and_then(|s| s.parse::<f64>().ok());
    let Some(body) = r.body() else { return Ok(Vec::new()) };
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut out = Vec::with_capacity(total.unwrap_or(0.0) as usize);
    progress(url, 0.0, total, cached);
    loop {
        let chunk = wait(reader.read()).await.map_err(ferr)?;
        if Reflect::get(&chunk, &"done".into()).map_err(ferr)?.as_bool().unwrap_or(true) {
            break;
        }
        let v: Uint8Array = Reflect::get(&chunk, &"value".into()).map_err(ferr)?.unchecked_into();
        let start = out.len();
        out.resize(start + v.length() as usize, 0);
        v.copy_to(&mut out[start..]);
        progress(url, out.len() as f64, total, cached);
    }
    Ok(out)
}

/// Reads `file` from Cache Storage when it is there and intact (when `use_cache`), from the network
/// otherwise; a verified network copy is stored for next time.
pub async fn get(file: &Remote, use_cache: bool, progress: Progress<'_>) -> Result<Vec<u8>, WebError> {
    let url = file.url.as_str();
    let want = file.sha256.as_deref();
    let cache = if use_cache { open_cache().await } else { None };
    if let Some(c) = &cache
        && let Ok(hit) = wait(c.match_with_str(url)).await
        && let Ok(r) = hit.dyn_into::<Response>()
    {
        let bytes = read_body(url, &r, true, progress).await?;
        if verify(url, &bytes, want).is_ok() {
            return Ok(bytes);
        }
        // A stale or corrupt entry: forget it and go to the network.
        let _ = wait(c.delete_with_str(url)).await;
    }
    let r = fetch(url).await?;
    let bytes = read_body(url, &r, false, progress).await?;
    verify(url, &bytes, want)?;
    if let Some(c) = &cache {
        let body = Uint8Array::from(bytes.as_slice());
        if let Ok(copy) = Response::new_with_opt_buffer_source(Some(&body)) {
            // A full cache (quota) only costs the next visit a download.
            let _ = wait(c.put_with_str(url, &copy)).await;
        }
    }
    Ok(bytes)
}

/// Removes every cached model file.
pub async fn clear() -> Result<bool, WebError> {
    let caches = Reflect::get(&global(), &"caches".into())
        .ok()
        .and_then(|c| c.dyn_into::<CacheStorage>().ok())
        .ok_or_else(|| WebError::Input("this context has no Cache Storage".into()))?;
    let done = wait(caches.delete(CACHE_NAME)).await.map_err(|e| WebError::Input(crate::error::describe(&e)))?;
    Ok(done.as_bool().unwrap_or(false))
}
