#include "corral/engine/closer.hpp"

#include <boost/asio/post.hpp>

namespace corral {

void Closer::close(std::unique_ptr<Descriptor>& d) {
  if (!d) return;
  turn_.push_back(std::move(d));
  if (turn_.size() == 1) boost::asio::post(io_, [this] { hand_over(); });
}

void Closer::hand_over() {
  // Shared: a Chores job must be copyable, the descriptors are not.
  auto batch = std::make_shared<std::vector<std::unique_ptr<Descriptor>>>(std::move(turn_));
  turn_.clear();
  thread_.post([batch] {
    boost::system::error_code ignored;
    for (auto& d : *batch) d->close(ignored);
    batch->clear();  // destroyed here too, not on the engine thread
  });
}

Closer::~Closer() {
  if (!turn_.empty()) hand_over();
}

}  // namespace corral
