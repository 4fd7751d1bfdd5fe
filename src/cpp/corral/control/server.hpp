// The control server: the REST API of one running stack (see docs/api.md), on a Unix
// socket and optionally on loopback TCP with a token.
//
// It runs on a thread and io_context of its own, never on the engine thread, and reaches
// the stack only through the thread-safe Stack handle. It never waits on the engine: a
// request that waits (start, stop, restart) is woken by its Pending's on_ready hook; event
// streams get the stack's events through a listener that only copies them into a bounded
// per-client buffer. A slow or stuck client costs only its own connection: requests have a
// deadline and size limits, and an event-stream client whose buffer overflows is dropped.
// The header keeps Asio and Beast out so the bindings compile quickly.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "corral/engine/engine.hpp"

namespace corral::control {

struct ServerOptions {
  std::string unix_path;            // the socket to create (0600); empty: no Unix socket
  bool tcp = false;                 // also listen on loopback TCP (needs `token`)
  std::string tcp_host = "127.0.0.1";
  unsigned short tcp_port = 0;      // 0: any free port
  std::string token;                // required on TCP, compared in constant time
  std::string openapi;              // the document served at /v1/openapi.json
  std::string static_root;          // the dashboard's files, served at / and /static/NAME
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t max_feed_bytes = 4u << 20;  // per event-stream client
  double read_timeout = 10;         // seconds to receive one whole request
  double write_timeout = 10;        // seconds to send one response or event batch
  double keepalive_interval = 15;   // seconds between comments on an idle event stream
  int max_connections = 128;
};

class ControlServer {
 public:
  // Binds (a stale socket left by a dead owner is replaced; a live one is not: Error
  // "in use"), checks the options, and starts serving. `stack` must outlive the server.
  ControlServer(Stack& stack, ServerOptions options);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Closes every connection and the listening sockets (the socket file is removed), then
  // joins the thread. Idempotent. In a child forked from the owner it does nothing: the
  // thread is not there, and the socket is the parent's.
  void stop();

  const std::string& unix_path() const noexcept;
  unsigned short tcp_port() const noexcept;  // 0 without TCP
  // How many POST /v1/stack/stop requests were served; the owner (a detached stack's
  // daemon) can wait for the first with wait_stop_request.
  std::uint64_t stop_requests() const noexcept;
  bool wait_stop_request(double timeout) const;
  // A browser login link on the TCP port that works once: opening it sets an HttpOnly,
  // SameSite=Strict session cookie that authenticates like the token. Error without TCP.
  std::string login_url();
  // Replaces a document the owner computes and the server only serves. One name exists:
  // "runs" (GET /v1/runs, the start-up timelines of the last runs, which the Python owner
  // reads from its history database). Error for another name or a `json` that is not a
  // JSON object. Any thread; a request being answered keeps the document it began with.
  void set_document(std::string_view name, std::string_view json);

  struct Core;

 private:
  std::shared_ptr<Core> core_;
  std::thread thread_;
  pid_t owner_ = 0;
};

}  // namespace corral::control
