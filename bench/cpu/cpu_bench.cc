// Native CPU cumprod vs torch::cumprod (LibTorch) vs a memcpy of the same bytes, all in one run so
// the figures share machine state. Prints a Markdown table of medians and ratios.
//
//   scan_bench_cpu [--threads=1,2] [--min-reps=5] [--min-seconds=0.3]
//                  [--filter=SUBSTRING[|SUBSTRING...]] [--decays=near-one|wide]
//                  [--flush-subnormals=false|true]
//                  [--isa=auto|generic|avx2|avx512]
//
// --decays=wide draws decays from (0.5, 1), as scan-bench does: float products then fall into the
// subnormal range and stick there, which is what --flush-subnormals (scan-server's default) is
// for; it applies to the native kernel and, on the calling thread, to LibTorch alike.
//
// Timing: one warm-up call, then at least --min-reps timed calls and at least --min-seconds, the
// median reported. Outputs are preallocated and reused (torch::cumprod_out), so no variant pays
// for allocation or first-touch page faults. Threads: the native kernel and memcpy use one shared
// ThreadPool bounded by max_parallelism, LibTorch gets at::set_num_threads(threads).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "scan/kernels/cpu_cumprod.h"
#include "scan/kernels/float_env.h"
#include "scan/kernels/thread_pool.h"

namespace {

using scan::kernels::CpuScanOptions;
using scan::kernels::DType;
using scan::kernels::ScanShape;
using scan::kernels::ThreadPool;

struct Case {
  std::vector<std::int64_t> sizes;
  int dim;
  torch::ScalarType dtype;
};

struct Settings {
  std::vector<int> threads = {1, 2};
  int min_reps = 5;
  double min_seconds = 0.3;
  std::string filter;
  bool wide_decays = false;
  bool flush_subnormals = false;
  scan::kernels::CpuIsa isa = scan::kernels::CpuIsa::kAuto;
};

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (const std::int64_t length : {128, 1024, 4096, 32768}) {
      all.push_back({{2, 8, length, length == 128 ? 64 : 128}, 2, dtype});
    }
  }
  // The MM-Rec note's short sequences.
  for (std::int64_t length = 8; length <= 1024; length *= 2) {
    all.push_back({{2, 4, length, 64}, 2, torch::kFloat32});
  }
  // Contiguous scans along the last dim: many rows, one long row, one row beyond the L3. float64
  // too: its rows are the one path with compensated products (cumprod_body.h).
  for (const torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat64}) {
    all.push_back({{4096, 8192}, -1, dtype});
    all.push_back({{std::int64_t{1} << 22}, -1, dtype});
    all.push_back({{std::int64_t{1} << 26}, -1, dtype});
  }
  return all;
}

std::string describe(const Case& c) {
  std::ostringstream text;
  text << "[";
  for (std::size_t axis = 0; axis < c.sizes.size(); ++axis) {
    text << (axis ? "," : "") << c.sizes[axis];
  }
  text << "] dim " << c.dim << " "
       << (c.dtype == torch::kFloat32   ? "f32"
           : c.dtype == torch::kFloat64 ? "f64"
                                        : "bf16");
  return text.str();
}

template <typename Fn>
double median_ms(const Settings& settings, Fn&& fn) {
  fn();  // warm-up: caches, pool wake-up, LibTorch's lazy initialisation
  std::vector<double> samples;
  const auto start = std::chrono::steady_clock::now();
  while (static_cast<int>(samples.size()) < settings.min_reps ||
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() <
             settings.min_seconds) {
    const auto before = std::chrono::steady_clock::now();
    fn();
    samples.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - before)
            .count());
    if (samples.size() >= 200) break;
  }
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> values;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) values.push_back(std::stoi(item));
  return values;
}

// Whether a case's name contains any of the '|'-separated substrings of `filter` (empty: all).
bool matches(const std::string& name, const std::string& filter) {
  if (filter.empty()) return true;
  std::size_t begin = 0;
  while (true) {
    const std::size_t end = filter.find('|', begin);
    const std::string part = filter.substr(begin, end - begin);
    if (!part.empty() && name.find(part) != std::string::npos) return true;
    if (end == std::string::npos) return false;
    begin = end + 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Settings settings;
  for (int index = 1; index < argc; ++index) {
    const std::string arg = argv[index];
    auto value = [&](const char* prefix) -> const char* {
      return arg.rfind(prefix, 0) == 0 ? arg.c_str() + std::strlen(prefix) : nullptr;
    };
    if (const char* threads = value("--threads=")) {
      settings.threads = parse_list(threads);
    } else if (const char* reps = value("--min-reps=")) {
      settings.min_reps = std::atoi(reps);
    } else if (const char* seconds = value("--min-seconds=")) {
      settings.min_seconds = std::atof(seconds);
    } else if (const char* filter = value("--filter=")) {
      settings.filter = filter;
    } else if (const char* decays = value("--decays=")) {
      settings.wide_decays = std::string(decays) == "wide";
    } else if (const char* flush = value("--flush-subnormals=")) {
      settings.flush_subnormals = std::string(flush) == "true";
    } else if (const char* isa = value("--isa=")) {
      bool known = false;
      for (const auto candidate : {scan::kernels::CpuIsa::kAuto, scan::kernels::CpuIsa::kGeneric,
                                   scan::kernels::CpuIsa::kAvx2, scan::kernels::CpuIsa::kAvx512}) {
        if (std::string(isa) == scan::kernels::cpu_isa_name(candidate)) {
          settings.isa = candidate;
          known = true;
        }
      }
      if (!known || !scan::kernels::cpu_isa_supported(settings.isa)) {
        std::fprintf(stderr, "--isa=%s: unknown or not supported by this CPU\n", isa);
        return 2;
      }
    } else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      return 2;
    }
  }

  const int max_threads = *std::max_element(settings.threads.begin(), settings.threads.end());
  ThreadPool pool(std::max(0, max_threads - 1));
  std::printf("native ISA: %s, pool workers: %d, LibTorch %s, decays %s, flush subnormals %s\n\n",
              scan::kernels::cpu_isa_name(settings.isa == scan::kernels::CpuIsa::kAuto
                                              ? scan::kernels::cpu_best_isa()
                                              : settings.isa),
              pool.workers(), TORCH_VERSION, settings.wide_decays ? "(0.5, 1)" : "near one",
              settings.flush_subnormals ? "on" : "off");
  const scan::kernels::ScopedFlushSubnormals flush_for_torch(settings.flush_subnormals);
  std::printf(
      "| shape | threads | native ms | torch ms | memcpy ms | torch/native | native GB/s | "
      "native/memcpy bw | max rel diff vs torch |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");

  torch::manual_seed(1);
  for (const Case& c : cases()) {
    const std::string name = describe(c);
    if (!matches(name, settings.filter)) continue;
    const int dim = c.dim < 0 ? c.dim + static_cast<int>(c.sizes.size()) : c.dim;
    // By default decay factors in (0, 1) close enough to one that products stay normal along the
    // whole scan: subnormal arithmetic would measure the FPU's slow path, not the kernels.
    const double spread =
        settings.wide_decays ? 0.5 : std::min(0.5, 4.0 / static_cast<double>(c.sizes[dim]));
    const torch::Tensor in =
        (1.0 - torch::rand(c.sizes, torch::kFloat64) * spread).to(c.dtype).contiguous();
    torch::Tensor native_out = torch::empty_like(in);
    torch::Tensor torch_out = torch::empty_like(in);
    const ScanShape shape =
        scan::kernels::collapse_around(c.sizes.data(), static_cast<int>(c.sizes.size()), dim);
    const DType dtype = c.dtype == torch::kFloat32   ? DType::kFloat32
                        : c.dtype == torch::kFloat64 ? DType::kFloat64
                                                     : DType::kBFloat16;
    const std::int64_t bytes = in.numel() * static_cast<std::int64_t>(in.element_size());

    for (const int threads : settings.threads) {
      CpuScanOptions options;
      options.pool = &pool;
      options.max_parallelism = threads;
      options.flush_subnormals = settings.flush_subnormals;
      options.isa = settings.isa;
      const double native = median_ms(settings, [&] {
        if (!scan::kernels::cpu_cumprod(in.data_ptr(), native_out.data_ptr(), shape, dtype, options)
                 .ok()) {
          std::abort();
        }
      });
      at::set_num_threads(threads);
      const double reference =
          median_ms(settings, [&] { torch::cumprod_out(torch_out, in, c.dim); });
      const auto* source = static_cast<const char*>(in.data_ptr());
      auto* target = static_cast<char*>(native_out.data_ptr());
      const std::int64_t piece = (bytes / threads + 63) / 64 * 64;
      const double copy = median_ms(settings, [&] {
        pool.parallel_for(threads, threads, [&](std::int64_t part) {
          const std::int64_t begin = std::min(bytes, part * piece);
          const std::int64_t end = std::min(bytes, begin + piece);
          std::memcpy(target + begin, source + begin, static_cast<std::size_t>(end - begin));
        });
      });
      // memcpy overwrote native_out: recompute once for the accuracy column.
      scan::kernels::cpu_cumprod(in.data_ptr(), native_out.data_ptr(), shape, dtype, options);
      const torch::Tensor want = torch_out.to(torch::kFloat64);
      // Relative differences of underflowed results say nothing: compare the normal range only.
      const torch::Tensor normal = want.abs() > 1e-30;
      const double diff = ((native_out.to(torch::kFloat64) - want).abs() / want.abs())
                              .masked_select(normal)
                              .max()
                              .item<double>();
      std::printf("| %s | %d | %.4g | %.4g | %.4g | %.1fx | %.1f | %.0f%% | %.1e |\n", name.c_str(),
                  threads, native, reference, copy, reference / native,
                  2.0 * static_cast<double>(bytes) / (native * 1e6), 100.0 * copy / native, diff);
      std::fflush(stdout);
    }
  }
  return 0;
}
