// Stand-in for gloo/context.h: the one member ProcessGroupGloo.hpp's inline code names (see
// README.md beside it). Never instantiated or called from swift-rs.
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
