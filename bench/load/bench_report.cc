#include "bench_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <numeric>

#include "scan/wire/byte_size.h"

namespace scan::bench {
namespace {

double nearest_rank(const std::vector<double>& sorted, double quantile) {
  const auto rank = static_cast<std::size_t>(std::ceil(quantile * sorted.size()));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string json_percentiles(const Percentiles& p) {
  return fmt::format(
      R"({{"count": {}, "mean_us": {:.1f}, "p50_us": {:.1f}, "p90_us": {:.1f}, "p99_us": {:.1f}, )"
      R"("p999_us": {:.1f}, "max_us": {:.1f}}})",
      p.count, p.mean_us, p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us);
}

std::string data_path(const std::string& prefix, const std::string& what) {
  return prefix + "-" + what + ".dat";
}

}  // namespace

Percentiles percentiles(std::vector<double>* latencies_us) {
  Percentiles p;
  p.count = static_cast<std::int64_t>(latencies_us->size());
  if (latencies_us->empty()) return p;
  std::sort(latencies_us->begin(), latencies_us->end());
  const auto& sorted = *latencies_us;
  p.mean_us = std::accumulate(sorted.begin(), sorted.end(), 0.0) / sorted.size();
  p.p50_us = nearest_rank(sorted, 0.50);
  p.p90_us = nearest_rank(sorted, 0.90);
  p.p99_us = nearest_rank(sorted, 0.99);
  p.p999_us = nearest_rank(sorted, 0.999);
  p.max_us = sorted.back();
  return p;
}

RunSummary summarize(std::vector<Sample> samples, double seconds) {
  RunSummary run;
  run.seconds = seconds;
  std::map<std::string, std::vector<double>> by_backend;
  std::vector<double> compute_us;
  std::int64_t bytes = 0;
  for (auto& sample : samples) {
    ++run.codes[sample.code];
    if (sample.code != "OK") {
      ++run.errors;
      continue;
    }
    ++run.ok;
    bytes += sample.bytes;
    run.sorted_latencies_us.push_back(sample.latency_us);
    by_backend[sample.backend].push_back(sample.latency_us);
    if (sample.server_compute_us >= 0) compute_us.push_back(sample.server_compute_us);
  }
  run.latency = percentiles(&run.sorted_latencies_us);
  run.server_compute = percentiles(&compute_us);
  for (auto& [backend, latencies] : by_backend) run.backends[backend] = percentiles(&latencies);
  if (seconds > 0) {
    run.throughput_rps = run.ok / seconds;
    run.payload_mbps = bytes / seconds / 1e6;
  }
  return run;
}

bool parse_mix(const std::string& text, std::vector<MixEntry>* mix) {
  mix->clear();
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string part = text.substr(start, comma - start);
    const std::size_t colon = part.find(':');
    MixEntry entry;
    if (!wire::parse_byte_size(part.substr(0, colon), &entry.bytes)) return false;
    if (colon != std::string::npos) {
      char* end = nullptr;
      entry.weight = std::strtod(part.c_str() + colon + 1, &end);
      if (*end != '\0' || !(entry.weight > 0)) return false;
    }
    mix->push_back(entry);
    start = comma + 1;
  }
  return !mix->empty();
}

std::string to_json(const std::vector<RunSummary>& runs, const std::string& command_line) {
  std::string out = fmt::format("{{\n  \"command\": {},\n  \"runs\": [", json_string(command_line));
  for (std::size_t index = 0; index < runs.size(); ++index) {
    const RunSummary& run = runs[index];
    std::string codes, backends;
    for (const auto& [code, count] : run.codes) {
      codes += fmt::format("{}{}: {}", codes.empty() ? "" : ", ", json_string(code), count);
    }
    for (const auto& [backend, latency] : run.backends) {
      backends += fmt::format("{}{}: {}", backends.empty() ? "" : ", ", json_string(backend),
                              json_percentiles(latency));
    }
    out += fmt::format(
        "{}\n    {{\"label\": {}, \"mode\": {}, \"offered_rate\": {:.1f}, \"concurrency\": {}, "
        "\"connections\": {}, \"seconds\": {:.3f}, \"ok\": {}, \"errors\": {}, \"throughput_rps\": "
        "{:.1f}, "
        "\"payload_mbps\": {:.2f},\n     \"latency\": {},\n     \"server_compute\": {},\n     "
        "\"codes\": {{{}}},\n     \"backends\": {{{}}}}}",
        index == 0 ? "" : ",", json_string(run.label), json_string(run.mode), run.offered_rate,
        run.concurrency, run.connections, run.seconds, run.ok, run.errors, run.throughput_rps,
        run.payload_mbps, json_percentiles(run.latency), json_percentiles(run.server_compute),
        codes, backends);
  }
  return out + "\n  ]\n}\n";
}

std::string to_csv(const std::vector<RunSummary>& runs) {
  std::string out =
      "label,mode,offered_rate,concurrency,seconds,ok,errors,throughput_rps,payload_mbps,"
      "p50_us,p90_us,p99_us,p999_us,max_us\n";
  for (const RunSummary& run : runs) {
    out += fmt::format(
        "{},{},{:.1f},{},{:.3f},{},{},{:.1f},{:.2f},{:.1f},{:.1f},{:.1f},{:.1f},{:.1f}\n",
        run.label, run.mode, run.offered_rate, run.concurrency, run.seconds, run.ok, run.errors,
        run.throughput_rps, run.payload_mbps, run.latency.p50_us, run.latency.p90_us,
        run.latency.p99_us, run.latency.p999_us, run.latency.max_us);
  }
  return out;
}

bool write_plot_data(const std::vector<RunSummary>& runs, const std::string& prefix,
                     std::string* error) {
  auto write = [error](const std::string& path, const std::string& text) {
    std::ofstream file(path);
    file << text;
    if (!file) *error = "cannot write " + path;
    return static_cast<bool>(file);
  };
  std::string load;
  for (std::size_t index = 0; index < runs.size(); ++index) {
    const auto& sorted = runs[index].sorted_latencies_us;
    std::string cdf;
    // At most ~2000 points per curve: enough for a smooth line, small enough for gnuplot.
    const std::size_t step = std::max<std::size_t>(1, sorted.size() / 2000);
    for (std::size_t at = 0; at < sorted.size(); at += step) {
      cdf += fmt::format("{:.4f} {:.6f}\n", sorted[at] / 1000.0, (at + 1.0) / sorted.size());
    }
    if (!sorted.empty()) cdf += fmt::format("{:.4f} 1\n", sorted.back() / 1000.0);
    if (!write(data_path(prefix, fmt::format("cdf-{}", index)), cdf)) return false;
    load += fmt::format("{:.1f} {:.4f} {:.4f}\n", runs[index].throughput_rps,
                        runs[index].latency.p50_us / 1000.0, runs[index].latency.p99_us / 1000.0);
  }
  return write(data_path(prefix, "load"), load);
}

std::string gnuplot_script(const std::vector<RunSummary>& runs, const std::string& prefix) {
  std::string script = fmt::format(
      "set terminal pngcairo size 900,600 noenhanced\nset output '{}-cdf.png'\nset title 'Latency "
      "CDF'\n"
      "set xlabel 'latency (ms)'\nset ylabel 'fraction of requests'\nset logscale x\n"
      "set key bottom right\nset grid\nplot ",
      prefix);
  for (std::size_t index = 0; index < runs.size(); ++index) {
    const std::string title =
        runs[index].label.empty() ? fmt::format("run {}", index) : runs[index].label;
    script += fmt::format("{}'{}' using 1:2 with lines title '{}'", index == 0 ? "" : ", ",
                          data_path(prefix, fmt::format("cdf-{}", index)), title);
  }
  script += "\n";
  if (runs.size() > 1) {
    script += fmt::format(
        "set output '{0}-load.png'\nset title 'Latency against load'\nunset logscale x\n"
        "set logscale y\nset xlabel 'throughput (requests/s)'\nset ylabel 'latency (ms)'\n"
        "set key top left\nplot '{1}' using 1:2 with linespoints title 'p50', "
        "'{1}' using 1:3 with linespoints title 'p99'\n",
        prefix, data_path(prefix, "load"));
  }
  return script;
}

}  // namespace scan::bench
