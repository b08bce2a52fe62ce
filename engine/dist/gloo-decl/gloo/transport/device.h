// Stand-in for gloo/transport/device.h: the transport classes ProcessGroupGloo.hpp holds only
// through smart pointers (see README.md beside it).
#pragma once

namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo
