// The engine thread and its lifecycle. One io_context on one long-lived thread owns every
// process, pipe, timer and state; the public Stack methods (stack.cpp) post work to it
// through Impl::call and hand back Pending results.
#include <sys/wait.h>

#include <fmt/format.h>

#include <future>

#include "corral/engine/engine_impl.hpp"
#include "corral/os/fd_table.hpp"
#include "corral/os/pidfd.hpp"
#include "corral/spawn/spawn.hpp"

namespace corral {

std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
double wall_seconds() { return static_cast<double>(wall_ns()) / 1e9; }

Svc& StackState::at(const std::string& name) {
  auto it = index.find(name);
  if (it == index.end()) throw Error(fmt::format("stack '{}' has no service '{}'", spec.name, name));
  return *services[it->second];
}

Engine::Engine() : impl_(std::make_unique<Impl>()) {}

std::shared_ptr<Engine> Engine::create(const std::string& watcher_program) {
  std::shared_ptr<Engine> e(new Engine());
  auto& impl = *e->impl_;
  raise_fd_limit();
  // Room for the descriptors of a few hundred services, made before the engine thread
  // exists: while a process has one thread, growing its fd table costs no RCU grace period
  // (os/fd_table.hpp), and larger starts then grow it once each, not by doubling.
  os::reserve_fd_slots(1024);
  // The engine thread takes no asynchronous signals: they belong to the host program
  // (Python handles them on its main thread), and none should interrupt our syscalls.
  std::promise<void> started;
  auto ready = started.get_future();
  impl.thread = start_own_thread([&impl, &started, &watcher_program] {
    impl.thread_id = std::this_thread::get_id();
    // The watcher is forked from this thread, like every service.
    impl.watcher = std::make_unique<DeathWatcher>(impl.io, watcher_program);
    started.set_value();
    impl.io.run();
  });
  ready.wait();
  // The helpers every stop uses, started now: a thread created during a stop would cost
  // the stop its creation, and would count as a fork in the window that tells whether
  // anything but corral forked (the sweep's scan is skipped only when nothing did).
  impl.closer.start();
  impl.chores.start();
  os::pidfd_signals_groups();  // asked once, here rather than at the first exit
  return e;
}

void Engine::shutdown() noexcept {
  auto& impl = *impl_;
  if (!impl.alive.exchange(false)) return;
  if (impl.thread.joinable()) {
    asio::post(impl.io, [&impl] {
      impl.kill_all();
      impl.watcher.reset();
      impl.work.reset();
      impl.io.stop();
    });
    if (std::this_thread::get_id() == impl.thread_id)
      impl.thread.detach();
    else
      impl.thread.join();
  }
}

void Engine::abandon_after_fork() noexcept {
  impl_->alive = false;
  if (impl_->watcher) impl_->watcher->abandon();
  // Never destroy this engine here: its thread object names a thread of the parent
  // (destroying a joinable std::thread terminates), and its io_context still owns the
  // handlers of inherited stacks. One deliberate leak per fork.
  new std::shared_ptr<Engine>(shared_from_this());
}

Engine::~Engine() {
  // An engine abandoned after fork has no thread here: leave it be.
  if (impl_->alive) shutdown();
}

std::unique_ptr<Stack> Engine::create_stack(StackSpec spec) {
  validate_stack(spec);
  Graph graph(spec.services);
  auto st = std::make_shared<StackState>(std::move(spec), std::move(graph));
  return impl_->call([this, st]() {
    auto& impl = *impl_;
    st->id = fmt::format("{}-{}-{}", st->spec.name.empty() ? "stack" : st->spec.name, ::getpid(), ++impl.next_stack);
    // The watcher sweeps this stack's escapees by its marker if the owner dies.
    if (impl.watcher) impl.watcher->watch_stack(st->id);
    for (std::size_t i = 0; i < st->spec.services.size(); ++i) {
      st->services.push_back(std::make_unique<Svc>(impl.io, st->spec.services[i], i));
      if (!st->spec.log_dir.empty())
        st->services.back()->log_file = std::make_unique<LogFile>(
            st->spec.log_dir + "/" + st->spec.services[i].name + ".log", st->spec.log_max_size, st->spec.log_keep);
      st->index.emplace(st->spec.services[i].name, i);
      st->log_counters.push_back(std::make_unique<std::atomic<std::uint64_t>[]>(2));
      ServiceStatus row;
      row.name = st->spec.services[i].name;
      st->status_snapshot.push_back(std::move(row));
    }
    impl.stacks.push_back(st);
    return std::unique_ptr<Stack>(new Stack(shared_from_this(), st));
  });
}

}  // namespace corral
