// corral-watch: the death watcher as a program of its own, exec'd by the engine with its
// socket as fd 3. Exec'd rather than forked so that it holds none of the host's memory.
#include "corral/engine/watcher.hpp"

int main() { corral::run_watcher(3); }
