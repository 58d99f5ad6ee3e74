// runtime_warp.cpp: warp-synchronous calls (runtime.h's Engine). A lane that calls a shuffle,
// vote, reduction or __syncwarp() waits until every lane its mask names has made the same
// call, and the last arrival computes every lane's result (PTX's rules) and releases them.
// __activemask() and the deadlock report run once nothing is runnable.
#include <string>

#include "runtime.h"

namespace emu::detail::runtime {
namespace {

// PTX ISA, shfl.sync: the source lane j for `lane`, or `lane` itself when j is out of range.
unsigned shuffle_source(WarpKind kind, unsigned lane, unsigned b, unsigned c) {
  const int l = static_cast<int>(lane), bval = static_cast<int>(b & 31u);
  const int cval = static_cast<int>(c & 31u), segmask = static_cast<int>((c >> 8) & 31u);
  const int max_lane = (l & segmask) | (cval & ~segmask);
  const int min_lane = l & segmask;
  int j = 0;
  bool in_range = false;
  switch (kind) {
    case WarpKind::ShflUp:
      j = l - bval;
      in_range = j >= max_lane;
      break;
    case WarpKind::ShflDown:
      j = l + bval;
      in_range = j <= max_lane;
      break;
    case WarpKind::ShflXor:
      j = l ^ bval;
      in_range = j <= max_lane;
      break;
    default:  // ShflIdx
      j = min_lane | (bval & ~segmask);
      in_range = j <= max_lane;
      break;
  }
  return static_cast<unsigned>(in_range ? j : l);
}

unsigned long long reduce(WarpKind kind, const Fiber* lanes, unsigned mask) {
  unsigned r = 0;
  bool first = true;
  for (unsigned m = mask; m; m &= m - 1) {
    const unsigned lane = __builtin_ctz(m);
    const auto v = static_cast<unsigned>(lanes[lane].call.value);
    switch (kind) {
      case WarpKind::Ballot: r |= v ? 1u << lane : 0u; break;
      case WarpKind::Any: r = r || v; break;
      case WarpKind::All: r = (first || r) && v; break;
      case WarpKind::ReduceAdd: r += v; break;
      case WarpKind::ReduceMinS: r = first || int(v) < int(r) ? v : r; break;
      case WarpKind::ReduceMaxS: r = first || int(v) > int(r) ? v : r; break;
      case WarpKind::ReduceMinU: r = first || v < r ? v : r; break;
      case WarpKind::ReduceMaxU: r = first || v > r ? v : r; break;
      case WarpKind::ReduceAnd: r = first ? v : r & v; break;
      case WarpKind::ReduceOr: r |= v; break;
      case WarpKind::ReduceXor: r ^= v; break;
      default: break;  // __syncwarp returns nothing
    }
    first = false;
  }
  return r;
}

}  // namespace

unsigned long long Engine::warp_call(const WarpCall& call) {
  Fiber& f = *current_;
  Warp& w = warps_[f.linear / kWarpSize];
  const unsigned bit = 1u << (f.linear % kWarpSize);
  if (call.kind != WarpKind::ActiveMask) {
    if (!(call.mask & bit))
      fail(EMU_ERROR_WARP, "%s at %s:%d: %s (lane %u) is not in its own mask 0x%08x",
           call.intrinsic, call.file, call.line, thread_name(f).c_str(), f.linear % kWarpSize,
           call.mask);
    if (call.mask & ~w.exists)
      fail(EMU_ERROR_WARP,
           "%s at %s:%d: mask 0x%08x names lanes 0x%08x that do not exist (warp %u has lanes "
           "0x%08x)",
           call.intrinsic, call.file, call.line, call.mask, call.mask & ~w.exists,
           f.linear / kWarpSize, w.exists);
    if (call.mask & w.exited)
      fail(EMU_ERROR_WARP, "%s at %s:%d: mask 0x%08x names lanes 0x%08x that have exited",
           call.intrinsic, call.file, call.line, call.mask, call.mask & w.exited);
  }
  f.call = call;
  w.waiting |= bit;
  if (call.kind != WarpKind::ActiveMask && (w.waiting & call.mask) == call.mask)
    try_rendezvous(f.linear / kWarpSize, call.mask);
  suspend(f);
  return f.result;
}

// Completes the rendezvous of `mask` if every lane it names waits with that same mask.
// A lane that waits with another mask belongs to another rendezvous, which must finish
// (and the lane come back) first.
void Engine::try_rendezvous(unsigned warp, unsigned mask) {
  Fiber* lanes = &fibers_[warp * kWarpSize];
  const unsigned first = __builtin_ctz(mask);
  for (unsigned m = mask; m; m &= m - 1) {
    const WarpCall& c = lanes[__builtin_ctz(m)].call;
    if (c.kind == WarpKind::ActiveMask || c.mask != mask) return;
  }
  for (unsigned m = mask; m; m &= m - 1) {
    const Fiber& g = lanes[__builtin_ctz(m)];
    if (g.call.kind != lanes[first].call.kind)
      fail(EMU_ERROR_WARP,
           "warp %u, mask 0x%08x: %s calls %s at %s:%d but %s calls %s at %s:%d", warp, mask,
           thread_name(lanes[first]).c_str(), lanes[first].call.intrinsic,
           lanes[first].call.file, lanes[first].call.line, thread_name(g).c_str(),
           g.call.intrinsic, g.call.file, g.call.line);
  }
  const WarpKind kind = lanes[first].call.kind;
  const bool shuffle = kind <= WarpKind::ShflXor;  // WarpKind lists the shuffles first
  const unsigned long long vote = shuffle ? 0 : reduce(kind, lanes, mask);
  for (unsigned m = mask; m; m &= m - 1) {
    const unsigned lane = __builtin_ctz(m);
    Fiber& g = lanes[lane];
    g.result = vote;
    if (shuffle) {
      const unsigned src = shuffle_source(kind, lane, g.call.b, g.call.c);
      // Reading a lane outside the mask is undefined on the device: hand back poison.
      g.result = (mask >> src) & 1u ? lanes[src].call.value : ~0ull;
    }
    warps_[warp].waiting &= ~(1u << lane);
    make_runnable(g);
  }
}

// __activemask() models convergence: once nothing can run, the lanes of a warp waiting at
// the same __activemask() call site are the ones executing it together.
bool Engine::release_active_masks() {
  bool released = false;
  for (unsigned w = 0; w < warps_.size(); ++w) {
    Fiber* lanes = &fibers_[w * kWarpSize];
    unsigned pending = 0;
    for (unsigned m = warps_[w].waiting; m; m &= m - 1)
      if (lanes[__builtin_ctz(m)].call.kind == WarpKind::ActiveMask) pending |= m & -m;
    while (pending) {
      const WarpCall& lead = lanes[__builtin_ctz(pending)].call;
      unsigned group = 0;
      for (unsigned m = pending; m; m &= m - 1) {
        const WarpCall& c = lanes[__builtin_ctz(m)].call;
        if (same_site(c.file, c.line, lead.file, lead.line)) group |= m & -m;
      }
      for (unsigned m = group; m; m &= m - 1) {
        Fiber& g = lanes[__builtin_ctz(m)];
        g.result = group;
        make_runnable(g);
      }
      pending &= ~group;
      warps_[w].waiting &= ~group;
      released = true;
    }
  }
  return released;
}

void Engine::report_deadlock() {
  std::string s = "deadlock: every remaining thread waits for something that cannot happen.";
  if (barrier_waiting_ > 0)
    s += format(" __syncthreads() at %s:%d has %u of %s waiting.", barrier_file_,
                barrier_line_, barrier_waiting_, threads(nthreads_).c_str());
  unsigned listed = 0;
  for (unsigned w = 0; w < warps_.size() && listed < 8; ++w) {
    const Fiber* lanes = &fibers_[w * kWarpSize];
    unsigned todo = warps_[w].waiting;
    while (todo && listed < 8) {
      const WarpCall& lead = lanes[__builtin_ctz(todo)].call;
      unsigned group = 0;
      for (unsigned m = todo; m; m &= m - 1) {
        const WarpCall& c = lanes[__builtin_ctz(m)].call;
        if (c.mask == lead.mask && c.kind == lead.kind) group |= m & -m;
      }
      s += format(" Warp %u lanes 0x%08x wait in %s (mask 0x%08x) at %s:%d; lanes 0x%08x of "
                  "the mask never joined.",
                  w, group, lead.intrinsic, lead.mask, lead.file, lead.line,
                  lead.mask & ~group);
      todo &= ~group;
      ++listed;
    }
  }
  set_error(EMU_ERROR_DEADLOCK, s);
}

}  // namespace emu::detail::runtime
