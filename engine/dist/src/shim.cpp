// The C side of swift-dist: a c10d TCPStore and ProcessGroupGloo built from libtorch's own
// exported classes, and the four collectives swift-rs uses, behind a C ABI. Tensors cross as
// `at::Tensor*`, which is what tch's `Tensor::as_ptr` hands out (torch-sys' `tensor` typedef).
// Every entry catches C++ exceptions and returns their message (malloc'd; freed by
// `swift_dist_free_error`), so no exception crosses into Rust.
//
// The gloo headers ProcessGroupGloo.hpp includes are not in the PyPI wheel: `gloo-decl/` stands
// in for them with declarations only (its README.md says why that is sound).

#define USE_C10D_GLOO 1

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

char* dup_message(const char* what) {
  size_t n = std::strlen(what);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out != nullptr) {
    std::memcpy(out, what, n + 1);
  }
  return out;
}

template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    *err = dup_message(e.what());
  } catch (...) {
    *err = dup_message("unknown C++ exception in c10d");
  }
  return 1;
}

void wait(Group* g, const c10::intrusive_ptr<c10d::Work>& work) {
  work->wait(g->timeout);
}

} // namespace

extern "C" {

// Connects to (rank 0 with `is_server`: hosts) the TCPStore at `addr:port`, keys under `prefix`,
// then creates the Gloo group of `world` ranks on one device (`iface`: GLOO_SOCKET_IFNAME's
// interface when not empty, else the hostname's address, falling back to loopback).
void* swift_dist_new(
    const char* addr,
    int port,
    int rank,
    int world,
    int is_server,
    long long timeout_ms,
    const char* prefix,
    const char* iface,
    char** err) {
  Group* out = nullptr;
  guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = false;
    opts.timeout = timeout;
    opts.useLibUV = true;
    c10::intrusive_ptr<c10d::Store> tcp =
        c10::make_intrusive<c10d::TCPStore>(std::string(addr), opts);
    c10::intrusive_ptr<c10d::Store> store =
        c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    if (iface != nullptr && iface[0] != '\0') {
      options->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForInterface(std::string(iface)));
    } else {
      options->devices.push_back(
          c10d::ProcessGroupGloo::createDefaultDevice());
    }
    options->threads = 1;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(
        store, rank, world, options);
    out = new Group{store, pg, timeout};
  });
  return out;
}

void swift_dist_free(void* group) {
  delete static_cast<Group*>(group);
}

void swift_dist_free_error(char* err) {
  std::free(err);
}

// Sums `t` in place over the ranks.
int swift_dist_all_reduce_sum(void* group, at::Tensor* t, char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    std::vector<at::Tensor> ts{*t};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    wait(g, g->backend->allreduce(ts, opts));
  });
}

// Overwrites `t` on every rank with `root`'s.
int swift_dist_broadcast(void* group, at::Tensor* t, int root, char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    wait(g, g->backend->broadcast(ts, opts));
  });
}

// `outs[r]` (one per rank, each shaped as `input`) receives rank r's `input`.
int swift_dist_all_gather(
    void* group,
    at::Tensor* input,
    at::Tensor** outs,
    size_t n,
    char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    std::vector<at::Tensor> in{*input};
    std::vector<std::vector<at::Tensor>> out(1);
    for (size_t i = 0; i < n; ++i) {
      out[0].push_back(*outs[i]);
    }
    wait(g, g->backend->allgather(out, in));
  });
}

// `output` (n elements) receives the sum over the ranks of chunk `rank` of `input` (world × n
// elements): ZeRO-2's gradient reduce-scatter.
int swift_dist_reduce_scatter_sum(
    void* group,
    at::Tensor* output,
    at::Tensor* input,
    char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    wait(g, g->backend->_reduce_scatter_base(*output, *input, opts));
  });
}

// Frees `t`'s gradient (undefined afterwards), which tch cannot do: ZeRO-2 keeps only the
// gradients of its own shard.
int swift_dist_drop_grad(at::Tensor* t, char** err) {
  return guarded(err, [&] { t->mutable_grad() = at::Tensor(); });
}

// On `root`, `outs[r]` (one per rank, each shaped as `input`) receives rank r's `input`; the
// other ranks pass no `outs` (n = 0) and receive nothing.
int swift_dist_gather(
    void* group,
    at::Tensor* input,
    at::Tensor** outs,
    size_t n,
    int root,
    char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    std::vector<at::Tensor> in{*input};
    std::vector<std::vector<at::Tensor>> out;
    if (n > 0) {
      out.emplace_back();
      for (size_t i = 0; i < n; ++i) {
        out[0].push_back(*outs[i]);
      }
    }
    c10d::GatherOptions opts;
    opts.rootRank = root;
    wait(g, g->backend->gather(out, in, opts));
  });
}

// Sums `t` over the ranks into `root`'s `t` (the others' `t` is left undefined in value).
int swift_dist_reduce_sum(void* group, at::Tensor* t, int root, char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    std::vector<at::Tensor> ts{*t};
    c10d::ReduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.rootRank = root;
    opts.rootTensor = 0;
    wait(g, g->backend->reduce(ts, opts));
  });
}

int swift_dist_barrier(void* group, char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] { wait(g, g->backend->barrier()); });
}

// The rendezvous store, for failure reports: sets `key` to `value`.
int swift_dist_store_set(
    void* group,
    const char* key,
    const char* value,
    char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    std::string v(value);
    g->store->set(std::string(key), std::vector<uint8_t>(v.begin(), v.end()));
  });
}

// Whether `key` is set (1) or not (0); -1 with `err` when the store cannot be reached.
int swift_dist_store_has(void* group, const char* key, char** err) {
  auto* g = static_cast<Group*>(group);
  int found = -1;
  guarded(err, [&] { found = g->store->check({std::string(key)}) ? 1 : 0; });
  return found;
}

// The value of `key` (which must be set: check first), malloc'd into `*out` (`*len` bytes;
// freed by `swift_dist_free_error`).
int swift_dist_store_get(
    void* group,
    const char* key,
    char** out,
    size_t* len,
    char** err) {
  auto* g = static_cast<Group*>(group);
  return guarded(err, [&] {
    std::vector<uint8_t> v = g->store->get(std::string(key));
    char* buf = static_cast<char*>(std::malloc(v.size() + 1));
    if (buf == nullptr) {
      throw std::runtime_error("out of memory");
    }
    std::memcpy(buf, v.data(), v.size());
    buf[v.size()] = '\0';
    *out = buf;
    *len = v.size();
  });
}

} // extern "C"
