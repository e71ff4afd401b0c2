#include "http.h"

#include <curl/curl.h>
#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <mutex>

#include "errors.h"
#include "stop.h"

namespace stsync {
namespace {

void global_init_once() {
  static std::once_flag flag;
  std::call_once(flag, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

struct EasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};

bool header_is(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != std::tolower(static_cast<unsigned char>(name[i])))
      return false;
  return true;
}

std::string header_value(std::string_view line, size_t name_size) {
  std::string_view v = line.substr(name_size + 1);
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.remove_suffix(1);
  return std::string(v);
}

}  // namespace

struct CurlTransport::Impl {
  std::unique_ptr<CURL, EasyDeleter> easy;
  CurlOptions options;
  HttpResponse* current = nullptr;
  bool too_large = false;
  size_t last_body_size = 0;
  char error_buffer[CURL_ERROR_SIZE] = {};

  // libcurl callbacks: plain appends, nothing that can throw across the C boundary except
  // std::bad_alloc, which is caught and turned into a short write (an aborted transfer).
  static size_t on_body(char* data, size_t size, size_t n, void* self) noexcept {
    try {
      Impl& impl = *static_cast<Impl*>(self);
      std::string& body = impl.current->body;
      // Decompressed bytes: the cap holds whatever the wire size or Content-Length claims.
      const size_t need = body.size() + size * n;
      if (static_cast<long long>(need) > impl.options.max_body_bytes) {
        impl.too_large = true;
        return 0;
      }
      if (body.capacity() < need + simdjson::SIMDJSON_PADDING) {
        // Grow by doubling, but never past the cap (plus simdjson's padding): a body cut at
        // max_response_mb never held more than that, and the padding added at the end never
        // copies the body once more.
        const size_t cap = static_cast<size_t>(impl.options.max_body_bytes) + simdjson::SIMDJSON_PADDING;
        body.reserve(std::min(cap, std::max(need + simdjson::SIMDJSON_PADDING, body.capacity() * 2)));
      }
      body.append(data, size * n);
      return size * n;
    } catch (...) {
      return 0;
    }
  }
  // Called by libcurl about once a second and on every chunk: a stop request aborts the transfer.
  static int on_progress(void*, curl_off_t, curl_off_t, curl_off_t, curl_off_t) noexcept {
    return stop_requested() ? 1 : 0;
  }
  static size_t on_header(char* data, size_t size, size_t n, void* self) noexcept {
    try {
      std::string_view line(data, size * n);
      HttpResponse& r = *static_cast<Impl*>(self)->current;
      if (line.rfind("HTTP/", 0) == 0) {
        r.retry_after.reset();  // a new response (after 100-continue or a redirect)
        r.date.reset();
      } else if (header_is(line, "retry-after")) {
        r.retry_after = header_value(line, 11);
      } else if (header_is(line, "date")) {
        r.date = header_value(line, 4);
      } else if (header_is(line, "content-type")) {
        r.content_type = header_value(line, 12);
      }
      return size * n;
    } catch (...) {
      return 0;
    }
  }
};

CurlTransport::CurlTransport(CurlOptions options) : impl_(std::make_unique<Impl>()) {
  global_init_once();
  impl_->options = std::move(options);
  impl_->easy.reset(curl_easy_init());
  if (!impl_->easy) throw Error(ErrorKind::network, "cannot initialise libcurl");
}

CurlTransport::~CurlTransport() = default;

HttpResponse CurlTransport::perform(const HttpRequest& request) {
  CURL* c = impl_->easy.get();
  const CurlOptions& o = impl_->options;
  curl_easy_reset(c);  // keeps the connection cache and TLS sessions, drops per-request options
  HttpResponse response;
  impl_->current = &response;
  impl_->too_large = false;
  // Pages of one feed are alike in size: room for the last one's body (and simdjson's padding)
  // up front, instead of growing by doubling and copying a page's worth of bytes on the way.
  if (impl_->last_body_size > (1 << 20))
    response.body.reserve(std::min<size_t>(impl_->last_body_size + impl_->last_body_size / 8,
                                           static_cast<size_t>(o.max_body_bytes)) +
                          simdjson::SIMDJSON_PADDING);
  impl_->error_buffer[0] = '\0';
  if (stop_requested()) throw Error(ErrorKind::interrupted, fmt::format("stopped by {}", stop_signal_name()));
  Slist headers;
  for (const std::string& h : request.headers) {
    curl_slist* next = curl_slist_append(headers.get(), h.c_str());
    if (next == nullptr) throw Error(ErrorKind::network, "out of memory building headers");
    headers.release();
    headers.reset(next);
  }
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  // gzip: what ServiceTitan serves, and cheap for a server to produce (brotli at the quality
  // some servers default to costs seconds per page).
  if (o.compressed) curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "gzip");
  curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(o.timeout_seconds));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(o.connect_timeout_seconds));
  // A body that trickles slower than 1 byte/s for 60 s is a stalled connection.
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, o.tls_verify ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, o.tls_verify ? 2L : 0L);
  if (!o.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, o.ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, impl_->error_buffer);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &Impl::on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, impl_.get());
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &Impl::on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, impl_.get());
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, &Impl::on_progress);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "stsync/0.1");
  if (request.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.body.size()));
  }
  const CURLcode rc = curl_easy_perform(c);
  impl_->current = nullptr;
  if (rc != CURLE_OK) {
    // Only the URL (which holds no secret) and libcurl's own words.
    const char* detail = impl_->error_buffer[0] ? impl_->error_buffer : curl_easy_strerror(rc);
    std::string url = request.url.substr(0, request.url.find('?'));
    if (impl_->too_large)
      throw Error(ErrorKind::bad_data,
                  fmt::format("{} {}: the response body exceeds max_response_mb ({} MB decompressed): "
                              "an endless or decompression-bomb body; raise servicetitan.max_response_mb "
                              "only if the endpoint really serves pages that large",
                              request.method, url, o.max_body_bytes >> 20));
    if (rc == CURLE_ABORTED_BY_CALLBACK || stop_requested())
      throw Error(ErrorKind::interrupted, fmt::format("{} {}: stopped by {}", request.method, url, stop_signal_name()));
    const ErrorKind kind = (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
                            rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL)
                               ? ErrorKind::http_permanent
                               : ErrorKind::network;
    throw Error(kind, fmt::format("{} {}: {}", request.method, url, detail));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  long connects = 0;
  curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects);
  connections_opened_ += connects;
  // simdjson reads up to SIMDJSON_PADDING bytes past the end: make them ours.
  response.body.reserve(response.body.size() + simdjson::SIMDJSON_PADDING);
  impl_->last_body_size = response.body.size();
  return response;
}

std::string url_encode(std::string_view value) {
  std::string out;
  for (unsigned char ch : value) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out.push_back(static_cast<char>(ch));
    } else {
      out += fmt::format("%{:02X}", ch);
    }
  }
  return out;
}

}  // namespace stsync
