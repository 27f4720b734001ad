// The measuring and reporting half of scan-bench, kept apart from its networking so that tests
// can check the statistics and formats directly: latency samples, percentiles, per-status and
// per-backend breakdowns, JSON/CSV output and gnuplot scripts for the PNG plots.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace scan::bench {

// One finished request. Latency runs from the moment the request was due (open loop: its
// scheduled arrival; closed loop: when it was sent) to the moment its answer was decoded.
struct Sample {
  double latency_us = 0;
  std::string code;     // "OK", "RESOURCE_EXHAUSTED", ...
  std::string backend;  // from the response; empty on errors
  std::int64_t bytes = 0;
  double server_compute_us = -1;  // Timing.compute_us of the response; < 0: none (errors, tcp)
};

struct Percentiles {
  std::int64_t count = 0;
  double mean_us = 0, p50_us = 0, p90_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
};

// Nearest-rank percentiles of `latencies_us` (sorted in place).
Percentiles percentiles(std::vector<double>* latencies_us);

// The summary of one run (one load level).
struct RunSummary {
  std::string label;
  std::string mode;         // "closed" or "open"
  double offered_rate = 0;  // open loop: requests per second asked for; 0 in closed loop
  int concurrency = 0;      // closed loop: requests in flight; open loop: most in flight allowed
  int connections = 1;      // gRPC connections per target the requests were spread over
  double seconds = 0;       // measured (after warm-up)
  std::int64_t ok = 0;
  std::int64_t errors = 0;
  double throughput_rps = 0;                  // successful requests per second
  double payload_mbps = 0;                    // tensor bytes per second in one direction, 1e6 bytes
  Percentiles latency;                        // successful requests only
  Percentiles server_compute;                 // the server's compute_us of those that report it
  std::map<std::string, std::int64_t> codes;  // every status, OK included
  std::map<std::string, Percentiles> backends;  // successful requests by answering backend
  std::vector<double> sorted_latencies_us;      // for the CDF plot and CSV
};

RunSummary summarize(std::vector<Sample> samples, double seconds);

// A weighted request size: "4Ki:3,1Mi:1" gives 4 KiB three times as often as 1 MiB.
struct MixEntry {
  std::int64_t bytes = 0;
  double weight = 1;
};
bool parse_mix(const std::string& text, std::vector<MixEntry>* mix);

std::string to_json(const std::vector<RunSummary>& runs, const std::string& command_line);
// One row per run with the headline figures.
std::string to_csv(const std::vector<RunSummary>& runs);
// A gnuplot script that draws `prefix`-cdf.png (latency CDF of every run) and, with more than one
// run, `prefix`-load.png (p50/p99 latency against achieved throughput). It reads the data files
// written by write_plot_data.
std::string gnuplot_script(const std::vector<RunSummary>& runs, const std::string& prefix);
// Writes `prefix`-cdf-<run>.dat and `prefix`-load.dat; false (with *error) on I/O failure.
bool write_plot_data(const std::vector<RunSummary>& runs, const std::string& prefix,
                     std::string* error);

}  // namespace scan::bench
