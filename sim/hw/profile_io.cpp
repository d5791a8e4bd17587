#include "hw/profile_io.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include "core/file_write.hpp"

namespace trainsim::hw {

namespace {

const std::vector<std::string>& memory_ops() {
  static const std::vector<std::string> ops = {"copy",   "layernorm", "rmsnorm", "gelu",
                                               "swiglu", "softmax",   "adam"};
  return ops;
}
const std::vector<std::string>& collective_ops() {
  static const std::vector<std::string> ops = {"all_reduce", "all_gather", "reduce_scatter",
                                               "all_to_all", "send_recv"};
  return ops;
}

// One TOML table with positions for messages; remembers which keys were read.
class Reader {
 public:
  Reader(const std::string& file, const toml::table& t, std::string prefix)
      : file_(file), t_(t), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const toml::source_region& r, const std::string& msg) const {
    throw ProfileError(file_, static_cast<int>(r.begin.line), static_cast<int>(r.begin.column),
                       msg);
  }
  std::string full(const std::string& key) const { return prefix_ + key; }

  const toml::node* get(const std::string& key, bool required) {
    seen_.insert(key);
    const toml::node* n = t_.get(key);
    if (n == nullptr && required) fail(t_.source(), full(key) + ": missing");
    return n;
  }
  std::string str(const std::string& key, bool required = true) {
    const toml::node* n = get(key, required);
    if (n == nullptr) return {};
    if (!n->is_string()) fail(n->source(), full(key) + ": must be a string");
    return n->as_string()->get();
  }
  std::int64_t integer(const std::string& key, std::int64_t lo, bool required = true) {
    const toml::node* n = get(key, required);
    if (n == nullptr) return 0;
    if (!n->is_integer()) fail(n->source(), full(key) + ": must be an integer");
    const std::int64_t v = n->as_integer()->get();
    if (v < lo) fail(n->source(), full(key) + ": must be >= " + std::to_string(lo));
    // Every integer of a profile is a count (ranks, nodes, sizes in elements) that callers
    // keep in an int; a larger one is bad input, not a silent wrap-around.
    if (v > std::numeric_limits<int>::max()) {
      fail(n->source(), full(key) + ": must be <= " +
                            std::to_string(std::numeric_limits<int>::max()));
    }
    return v;
  }
  double number(const std::string& key, bool positive, bool required = true) {
    const toml::node* n = get(key, required);
    if (n == nullptr) return 0;
    double v = 0;
    if (n->is_integer()) v = static_cast<double>(n->as_integer()->get());
    else if (n->is_floating_point()) v = n->as_floating_point()->get();
    else fail(n->source(), full(key) + ": must be a number");
    if (!std::isfinite(v) || v < 0 || (positive && v == 0)) {
      fail(n->source(), full(key) + (positive ? ": must be a finite number > 0"
                                              : ": must be a finite number >= 0"));
    }
    return v;
  }
  bool boolean(const std::string& key) {
    const toml::node* n = get(key, true);
    if (!n->is_boolean()) fail(n->source(), full(key) + ": must be true or false");
    return n->as_boolean()->get();
  }
  std::string choice(const std::string& key, const std::vector<std::string>& allowed) {
    std::string v = str(key);
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) {
        if (!list.empty()) list += ", ";
        list += a;
      }
      fail(t_.get(key)->source(), full(key) + ": unknown value \"" + v + "\" (one of " + list +
                                      ")");
    }
    return v;
  }
  void ignore(std::initializer_list<const char*> keys) {
    for (const char* k : keys) seen_.insert(k);
  }
  void check_unknown() const {
    for (const auto& [k, v] : t_) {
      if (seen_.count(std::string(k.str())) == 0) {
        fail(k.source(), full(std::string(k.str())) + ": unknown key");
      }
    }
  }

 private:
  const std::string& file_;
  const toml::table& t_;
  std::string prefix_;
  std::set<std::string> seen_;
};

// Visits each table of an array of tables `key` ([[key]]).
template <class F>
void each_table(Reader& root, const toml::table& t, const std::string& key, F&& f) {
  const toml::node* n = root.get(key, false);
  if (n == nullptr) return;
  const toml::array* arr = n->as_array();
  if (arr == nullptr) root.fail(n->source(), key + ": must be an array of tables ([[" + key + "]])");
  std::size_t i = 0;
  for (const toml::node& e : *arr) {
    const toml::table* et = e.as_table();
    if (et == nullptr) root.fail(e.source(), key + "[" + std::to_string(i) + "]: must be a table");
    f(*et, key + "[" + std::to_string(i) + "].");
    ++i;
  }
  (void)t;
}

/// A measured rate may not beat the base GPU's datasheet peak by more than this factor (clock
/// boost and rounding stay well inside it); a faster point is a timing error, and pricing
/// from it gave MFU above 100%.
constexpr double kPeakSlack = 1.1;

/// The fastest FLOP/s a kernel of `d` can run on `gpu`: the dense tensor-core peak; fp32 GEMMs
/// may use TF32 tensor cores, bounded by the 16-bit peak. 0 when the GPU has no such peak.
double flop_ceiling(const GpuSpec& gpu, Dtype d) {
  switch (d) {
    case Dtype::BF16: return gpu.peak_bf16;
    case Dtype::FP16: return gpu.peak_fp16;
    case Dtype::FP8: return gpu.peak_fp8;
    case Dtype::FP32: return std::max(gpu.peak_fp32, gpu.peak_bf16);
  }
  return 0;
}

/// Fails at `seconds` when `flops` in `seconds` beats `ceiling` by more than kPeakSlack.
void check_rate(Reader& e, const toml::table& t, const char* seconds_key, double flops,
                double seconds, double ceiling, const std::string& what) {
  if (!(ceiling > 0) || flops / seconds <= kPeakSlack * ceiling) return;
  char buf[160];
  std::snprintf(buf, sizeof buf, ": %.4g TFLOP/s is above the %s peak (%.4g TFLOP/s)",
                flops / seconds / 1e12, what.c_str(), ceiling / 1e12);
  e.fail(t.get(seconds_key)->source(),
         e.full(seconds_key) + buf + "; not a possible measurement");
}

/// One kernel or collective of a training step measured at over an hour is a timing or unit
/// error; priced, it would leave the simulator's time range and be blamed on the scenario.
constexpr double kMaxMeasuredSeconds = 3600;

void check_duration(Reader& e, const toml::table& t, const char* key, double seconds) {
  if (seconds <= kMaxMeasuredSeconds) return;
  char buf[120];
  std::snprintf(buf, sizeof buf, ": %.4g s for one measurement (over an hour)", seconds);
  e.fail(t.get(key)->source(), e.full(key) + buf + "; not a possible measurement");
}

Dtype parse_dtype(const std::string& s) {
  if (s == "bf16") return Dtype::BF16;
  if (s == "fp16") return Dtype::FP16;
  if (s == "fp8") return Dtype::FP8;
  return Dtype::FP32;
}

}  // namespace

HardwareProfile parse_profile(std::string_view text, const std::string& name) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    throw ProfileError(name, static_cast<int>(e.source().begin.line),
                       static_cast<int>(e.source().begin.column),
                       std::string(e.description()));
  }
  HardwareProfile p;
  Reader r(name, root, "");
  const toml::node* vn = r.get("profile_version", true);
  if (!vn->is_integer() || vn->as_integer()->get() != kProfileVersion) {
    r.fail(vn->source(), "profile_version: must be 1 (this trainsim reads version 1)");
  }
  p.base_gpu = r.str("base_gpu");
  if (find_builtin_gpu(p.base_gpu) == nullptr) {
    std::string list;
    for (const auto& g : builtin_gpus()) list += (list.empty() ? "" : ", ") + g.key;
    r.fail(root.get("base_gpu")->source(),
           "base_gpu: unknown built-in GPU \"" + p.base_gpu + "\" (one of " + list + ")");
  }
  const GpuSpec& base = *find_builtin_gpu(p.base_gpu);
  p.attention_impl = r.str("attention_impl", false);

  if (const toml::node* pn = r.get("provenance", false)) {
    if (!pn->is_table()) r.fail(pn->source(), "provenance: must be a table");
    Reader pr(name, *pn->as_table(), "provenance.");
    auto& v = p.provenance;
    v.gpu_name = pr.str("gpu_name", false);
    v.sm_count = static_cast<int>(pr.integer("sm_count", 0, false));
    v.compute_capability = static_cast<int>(pr.integer("compute_capability", 0, false));
    v.sm_clock_mhz = pr.number("sm_clock_mhz", false, false);
    v.mem_clock_mhz = pr.number("mem_clock_mhz", false, false);
    v.hbm_bytes = pr.number("hbm_bytes", false, false);
    v.device_count = static_cast<int>(pr.integer("device_count", 0, false));
    v.driver = pr.str("driver", false);
    v.cuda_runtime = pr.str("cuda_runtime", false);
    v.cublas = pr.str("cublas", false);
    v.nccl = pr.str("nccl", false);
    v.date = pr.str("date", false);
    v.command = pr.str("command", false);
    v.host = pr.str("host", false);
    pr.check_unknown();
  }

  // One measured time per GEMM shape: two points of one shape with different times would be
  // priced by whichever came first in the file.
  std::map<std::tuple<int, std::int64_t, std::int64_t, std::int64_t>, int> gemm_lines;
  each_table(r, root, "gemm", [&](const toml::table& t, const std::string& pre) {
    Reader e(name, t, pre);
    GemmPoint g;
    g.dtype = parse_dtype(e.choice("dtype", {"bf16", "fp16", "fp8", "fp32"}));
    g.m = e.integer("m", 1);
    g.n = e.integer("n", 1);
    g.k = e.integer("k", 1);
    g.seconds = e.number("seconds", true);
    check_duration(e, t, "seconds", g.seconds);
    check_rate(e, t, "seconds", g.flops(), g.seconds, flop_ceiling(base, g.dtype),
               base.key + " " + std::string(dtype_name(g.dtype)));
    e.ignore({"tflops"});
    e.check_unknown();
    const auto [at, fresh] = gemm_lines.emplace(
        std::make_tuple(static_cast<int>(g.dtype), g.m, g.n, g.k),
        static_cast<int>(t.source().begin.line));
    if (!fresh) {
      e.fail(t.source(), pre + "m, n, k: the same " + std::string(dtype_name(g.dtype)) +
                             " GEMM shape as the point at line " + std::to_string(at->second) +
                             " (one measured time per shape)");
    }
    p.gemm.push_back(g);
  });
  each_table(r, root, "attention", [&](const toml::table& t, const std::string& pre) {
    Reader e(name, t, pre);
    AttentionPoint a;
    a.causal = e.boolean("causal");
    a.head_dim = static_cast<int>(e.integer("head_dim", 1));
    a.batch = static_cast<int>(e.integer("batch", 1));
    a.heads = static_cast<int>(e.integer("heads", 1));
    a.kv_heads = static_cast<int>(e.integer("kv_heads", 1));
    a.seq = static_cast<int>(e.integer("seq", 1));
    a.fwd_seconds = e.number("fwd_seconds", true);
    a.bwd_seconds = e.number("bwd_seconds", true);
    check_duration(e, t, "fwd_seconds", a.fwd_seconds);
    check_duration(e, t, "bwd_seconds", a.bwd_seconds);
    if (a.heads % a.kv_heads != 0) {
      e.fail(t.get("kv_heads")->source(), pre + "kv_heads: must divide heads");
    }
    check_rate(e, t, "fwd_seconds", a.fwd_flops(), a.fwd_seconds, base.peak_bf16,
               base.key + " bf16");
    check_rate(e, t, "bwd_seconds", 2.5 * a.fwd_flops(), a.bwd_seconds, base.peak_bf16,
               base.key + " bf16");
    e.ignore({"fwd_tflops", "bwd_tflops"});
    e.check_unknown();
    p.attention.push_back(a);
  });
  each_table(r, root, "memory", [&](const toml::table& t, const std::string& pre) {
    Reader e(name, t, pre);
    MemoryPoint m;
    m.op = e.choice("op", memory_ops());
    m.bytes = e.number("bytes", true);
    m.seconds = e.number("seconds", true);
    check_duration(e, t, "seconds", m.seconds);
    // Memory-bound kernels move their bytes through HBM, or through L2 when they fit there:
    // a rate above the faster of the two (with kPeakSlack) is not a possible measurement.
    const double ceiling = std::max(base.hbm_bw, base.l2_bw);
    if (m.bytes / m.seconds > kPeakSlack * ceiling) {
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    ": %.4g GB/s is above the %s memory bandwidth (%.4g GB/s HBM, %.4g GB/s L2)",
                    m.bytes / m.seconds / 1e9, base.key.c_str(), base.hbm_bw / 1e9,
                    base.l2_bw / 1e9);
      e.fail(t.get("seconds")->source(), e.full("seconds") + buf + "; not a possible measurement");
    }
    e.ignore({"gbps"});
    e.check_unknown();
    p.memory.push_back(m);
  });
  each_table(r, root, "collective", [&](const toml::table& t, const std::string& pre) {
    Reader e(name, t, pre);
    CollectivePoint c;
    c.op = e.choice("op", collective_ops());
    c.ranks = static_cast<int>(e.integer("ranks", 2));
    c.nodes = static_cast<int>(e.integer("nodes", 1, false));
    if (c.nodes == 0) c.nodes = 1;
    if (c.nodes > c.ranks) {
      // The key may be missing (defaulted) or given under another spelling: blame the table.
      const toml::node* n = t.get("nodes");
      e.fail(n != nullptr ? n->source() : t.source(), pre + "nodes: more nodes than ranks");
    }
    c.bytes = e.number("bytes", true);
    c.seconds = e.number("seconds", true);
    check_duration(e, t, "seconds", c.seconds);
    c.algbw = e.number("algbw_gbps", false, false) * 1e9;
    c.busbw = e.number("busbw_gbps", false, false) * 1e9;
    e.check_unknown();
    p.collectives.push_back(c);
  });
  each_table(r, root, "fit", [&](const toml::table& t, const std::string& pre) {
    Reader e(name, t, pre);
    const std::string kind = e.choice("kind", {"gemm", "memory", "collective"});
    FamilyFit f;
    f.family = e.str("family");
    f.fit.alpha_s = e.number("alpha_s", false);
    f.fit.rate = e.number("rate", true);
    f.fit.max_rel_err = e.number("max_rel_err", false);
    f.fit.points = static_cast<int>(e.integer("points", 2));
    e.check_unknown();
    (kind == "gemm" ? p.gemm_fits : kind == "memory" ? p.memory_fits : p.collective_fits)
        .push_back(f);
  });
  r.check_unknown();
  p.path = name;
  return p;
}

HardwareProfile read_profile(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ProfileError(file.string(), 1, 1, "cannot open hardware profile");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_profile(ss.str(), file.string());
}

std::string profile_to_toml(const HardwareProfile& p) {
  // toml::table sorts keys; arrays keep their order, so the text is deterministic.
  toml::table root;
  root.insert("profile_version", p.profile_version);
  root.insert("base_gpu", p.base_gpu);
  root.insert("attention_impl", p.attention_impl);
  const auto& v = p.provenance;
  root.insert("provenance",
              toml::table{{"gpu_name", v.gpu_name},
                          {"sm_count", v.sm_count},
                          {"compute_capability", v.compute_capability},
                          {"sm_clock_mhz", v.sm_clock_mhz},
                          {"mem_clock_mhz", v.mem_clock_mhz},
                          {"hbm_bytes", v.hbm_bytes},
                          {"device_count", v.device_count},
                          {"driver", v.driver},
                          {"cuda_runtime", v.cuda_runtime},
                          {"cublas", v.cublas},
                          {"nccl", v.nccl},
                          {"date", v.date},
                          {"command", v.command},
                          {"host", v.host}});
  toml::array gemm;
  for (const auto& g : p.gemm) {
    gemm.push_back(toml::table{{"dtype", std::string(dtype_name(g.dtype))},
                               {"m", g.m},
                               {"n", g.n},
                               {"k", g.k},
                               {"seconds", g.seconds},
                               {"tflops", g.flops() / g.seconds / 1e12}});
  }
  toml::array att;
  for (const auto& a : p.attention) {
    att.push_back(toml::table{{"causal", a.causal},
                              {"head_dim", a.head_dim},
                              {"batch", a.batch},
                              {"heads", a.heads},
                              {"kv_heads", a.kv_heads},
                              {"seq", a.seq},
                              {"fwd_seconds", a.fwd_seconds},
                              {"bwd_seconds", a.bwd_seconds},
                              {"fwd_tflops", a.fwd_tflops()},
                              {"bwd_tflops", a.bwd_tflops()}});
  }
  toml::array mem;
  for (const auto& m : p.memory) {
    mem.push_back(toml::table{{"op", m.op},
                              {"bytes", static_cast<std::int64_t>(std::llround(m.bytes))},
                              {"seconds", m.seconds},
                              {"gbps", m.bytes / m.seconds / 1e9}});
  }
  toml::array coll;
  for (const auto& c : p.collectives) {
    coll.push_back(toml::table{{"op", c.op},
                               {"ranks", c.ranks},
                               {"nodes", c.nodes},
                               {"bytes", static_cast<std::int64_t>(std::llround(c.bytes))},
                               {"seconds", c.seconds},
                               {"algbw_gbps", c.algbw / 1e9},
                               {"busbw_gbps", c.busbw / 1e9}});
  }
  toml::array fits;
  auto add_fits = [&](const char* kind, const std::vector<FamilyFit>& fs) {
    for (const auto& f : fs) {
      fits.push_back(toml::table{{"kind", kind},
                                 {"family", f.family},
                                 {"alpha_s", f.fit.alpha_s},
                                 {"rate", f.fit.rate},
                                 {"max_rel_err", f.fit.max_rel_err},
                                 {"points", f.fit.points}});
    }
  };
  add_fits("gemm", p.gemm_fits);
  add_fits("memory", p.memory_fits);
  add_fits("collective", p.collective_fits);
  if (!gemm.empty()) root.insert("gemm", std::move(gemm));
  if (!att.empty()) root.insert("attention", std::move(att));
  if (!mem.empty()) root.insert("memory", std::move(mem));
  if (!coll.empty()) root.insert("collective", std::move(coll));
  if (!fits.empty()) root.insert("fit", std::move(fits));
  std::ostringstream out;
  out << "# trainsim hardware profile (measured by trainsim-calibrate); see docs/calibration.md\n"
      << root << "\n";
  return out.str();
}

void write_profile(const std::filesystem::path& file, const HardwareProfile& p) {
  if (!write_file_atomically(file, profile_to_toml(p))) {
    throw std::runtime_error("cannot write " + file.string());
  }
}

}  // namespace trainsim::hw
