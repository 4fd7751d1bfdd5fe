#include "corral/resources/runtime.hpp"

#include <stdexcept>

#include "corral/core/types.hpp"
#include "corral/os/runtime_dir.hpp"

namespace corral {

std::string runtime_subdir(const std::string& name) {
  try {
    return os::private_dir(os::runtime_dir() + "/" + name);
  } catch (const Error&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw Error(e.what());
  }
}

}  // namespace corral
