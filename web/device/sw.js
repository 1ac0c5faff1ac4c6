// The exported page's service worker: keeps every file of the site in a cache named after the
// model and runtime (a new export is a new cache), answers from it first, so the page works
// offline once it has been opened. It also marks the page cross-origin isolated (COOP/COEP on
// the responses it serves: everything is same-origin), so onnxruntime-web can use threads on
// any static host.
const CACHE = "__CACHE__";
const FILES = __FILES__;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("cbr-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

function isolated(response) {
  if (response.type === "opaque") return response;
  const headers = new Headers(response.headers);
  headers.set("Cross-Origin-Opener-Policy", "same-origin");
  headers.set("Cross-Origin-Embedder-Policy", "require-corp");
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  event.respondWith(
    caches.open(CACHE)
      .then((c) => c.match(event.request, { ignoreSearch: event.request.mode === "navigate" }))
      .then((hit) => hit || fetch(event.request))
      .then(isolated),
  );
});
