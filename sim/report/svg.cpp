#include "report/svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>

namespace trainsim::report {

namespace {

constexpr double kLeft = 120;     // label column, px
constexpr double kWidth = 1500;   // timeline width, px
constexpr double kRow = 22;       // pass row height, px
constexpr double kLane = 7;       // communication lane under each row, px
constexpr double kGap = 4;        // between stages, px
constexpr double kTitle = 26;     // run title, px
constexpr double kRunGap = 18;    // between stacked runs, px

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default:
        // XML 1.0 has no place for other control characters.
        o += (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') ? '?' : c;
    }
  }
  return o;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

/// Colours after the GPipe / PipeDream figures: forward blue, backward green, weight
/// gradient orange; the second DualPipe chunk (and odd interleaved chunks) in lighter tones.
const char* pass_colour(parallel::PassKind k, int chunk) {
  const bool alt = chunk % 2 == 1;
  switch (k) {
    case parallel::PassKind::Forward: return alt ? "#9ecae9" : "#4c78a8";
    case parallel::PassKind::Backward:
    case parallel::PassKind::BackwardInput: return alt ? "#98d594" : "#54a24b";
    case parallel::PassKind::BackwardWeight: return alt ? "#ffbf79" : "#f58518";
  }
  return "#999999";
}

const char* comm_colour(Category c) {
  switch (c) {
    case Category::TpComm: return "#8c8c8c";
    case Category::DpComm: return "#e45756";
    case Category::PpComm: return "#b279a2";
    case Category::Optimizer: return "#222222";
    default: return "#bbbbbb";
  }
}

struct Interval {
  double a, b;
};

/// Merges intervals closer than `eps` (px) so a lane never holds more rects than pixels.
std::vector<Interval> merge(std::vector<Interval> v, double eps) {
  std::sort(v.begin(), v.end(), [](const Interval& x, const Interval& y) { return x.a < y.a; });
  std::vector<Interval> out;
  for (const auto& i : v) {
    if (!out.empty() && i.a <= out.back().b + eps) {
      out.back().b = std::max(out.back().b, i.b);
    } else {
      out.push_back(i);
    }
  }
  return out;
}

double run_height(const workload::StepResult& r) {
  const double stages = static_cast<double>(r.stages.size());
  return kTitle + stages * (kRow + kLane + kGap);
}

/// Text colour readable on a pass colour: dark on the light tones of odd chunks.
const char* text_colour(int chunk) { return chunk % 2 == 1 ? "#1a1a1a" : "#ffffff"; }

void draw_run(std::ostringstream& os, const std::string& title, const workload::StepResult& r,
              double y0, double scale) {
  const TaskGraph& g = *r.graph;
  // Only the measured step is drawn (for multi-step runs, the steady-state step), from 0.
  const Time t0 = r.window_begin, t1 = r.window_end;
  const auto in_window = [&](Time a, Time b) { return !(b < t0) && !(t1 < a) && b >= a; };
  const auto x_of = [&](Time t) { return kLeft + (max(t, t0) - t0).seconds() * scale; };
  os << "<g class=\"run\">\n";
  os << "<text x=\"4\" y=\"" << num(y0 + 17) << "\" class=\"title\">" << esc(title) << "</text>\n";
  const auto row_y = [&](int stage) { return y0 + kTitle + stage * (kRow + kLane + kGap); };
  for (std::size_t s = 0; s < r.stages.size(); ++s) {
    const double y = row_y(static_cast<int>(s));
    os << "<text x=\"4\" y=\"" << num(y + 15) << "\" class=\"label\">stage " << s << "</text>\n";
    os << "<rect x=\"" << num(kLeft) << "\" y=\"" << num(y) << "\" width=\"" << num(kWidth)
       << "\" height=\"" << num(kRow) << "\" class=\"track\"/>\n";
  }
  // One box per pass, with its microbatch number when there is room.
  for (const auto& p : r.passes) {
    if (!in_window(p.start, p.end)) continue;
    const double x = x_of(p.start);
    const double w = std::max(0.5, x_of(min(p.end, t1)) - x);
    const double y = row_y(p.stage);
    os << "<rect class=\"op\" x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"" << num(w)
       << "\" height=\"" << num(kRow) << "\" fill=\"" << pass_colour(p.kind, p.chunk)
       << "\"><title>" << parallel::pass_letter(p.kind)
       << (p.kind == parallel::PassKind::BackwardInput ? " (input)" : "") << " microbatch "
       << p.microbatch << " chunk " << p.chunk << ": " << num(p.start.seconds() * 1e3) << "–"
       << num(p.end.seconds() * 1e3) << " ms</title></rect>\n";
    const std::string label = std::to_string(p.microbatch);
    if (w >= 6.0 * static_cast<double>(label.size()) + 2) {
      os << "<text class=\"mb\" x=\"" << num(x + w / 2) << "\" y=\"" << num(y + 15)
         << "\" fill=\"" << text_colour(p.chunk) << "\">" << label << "</text>\n";
    }
  }
  // Communication lane per stage: TP, DP, pipeline synchronisation, optimizer.
  const double eps = 0.5;
  for (std::size_t s = 0; s < r.stages.size(); ++s) {
    for (Category c : {Category::TpComm, Category::DpComm, Category::PpComm, Category::Optimizer}) {
      std::vector<Interval> iv;
      for (StreamId sid = 0; sid < g.num_streams(); ++sid) {
        const auto& st = g.stream(sid);
        if (st.rank != s) continue;
        const std::string& name = g.label(st.name);
        const bool p2p = name.rfind("pp_", 0) == 0;
        if (p2p) continue;  // transfers are drawn as lines
        for (TaskId t : st.tasks) {
          if (g.task(t).category != c || !in_window(r.task_start[t], r.task_end[t])) continue;
          iv.push_back({x_of(r.task_start[t]), x_of(min(r.task_end[t], t1))});
        }
      }
      const double y = row_y(static_cast<int>(s)) + kRow + 1;
      for (const auto& i : merge(std::move(iv), eps)) {
        os << "<rect class=\"comm\" x=\"" << num(i.a) << "\" y=\"" << num(y) << "\" width=\""
           << num(std::max(0.5, i.b - i.a)) << "\" height=\"" << num(kLane - 2) << "\" fill=\""
           << comm_colour(c) << "\"/>\n";
      }
    }
  }
  // Point-to-point transfers: a line from the sender's row to the receiver's row.
  for (TaskId t = 0; t < g.num_tasks(); ++t) {
    const Task& task = g.task(t);
    if (task.category != Category::PpComm || task.rendezvous == kNoId) continue;
    const auto& name = g.label(g.stream(task.stream).name);
    if (name.rfind("pp_send", 0) != 0) continue;
    for (TaskId other : g.rendezvous_members(task.rendezvous)) {
      if (other == t) continue;
      if (!in_window(r.task_start[t], r.task_end[t])) continue;
      const int from = static_cast<int>(g.stream(task.stream).rank);
      const int to = static_cast<int>(g.stream(g.task(other).stream).rank);
      const double x1 = x_of(r.task_start[t]);
      const double x2 = x_of(min(r.task_end[t], t1));
      const double y1 = row_y(from) + (to > from ? kRow : 0);
      const double y2 = row_y(to) + (to > from ? 0 : kRow);
      if (std::abs(to - from) == 1) {
        os << "<line class=\"p2p\" x1=\"" << num(x1) << "\" y1=\"" << num(y1) << "\" x2=\""
           << num(x2) << "\" y2=\"" << num(y2) << "\"/>\n";
      } else {
        // A wrap-around transfer (interleaved: last stage to first) would cross every row:
        // mark its two ends instead.
        const double d = to > from ? 5 : -5;
        os << "<line class=\"p2p\" x1=\"" << num(x1) << "\" y1=\"" << num(y1) << "\" x2=\""
           << num(x1) << "\" y2=\"" << num(y1 + d) << "\"/>\n";
        os << "<line class=\"p2p\" x1=\"" << num(x2) << "\" y1=\"" << num(y2 - d) << "\" x2=\""
           << num(x2) << "\" y2=\"" << num(y2) << "\"/>\n";
      }
    }
  }
  os << "</g>\n";
}

}  // namespace

std::string pipeline_svg(const std::vector<SvgRun>& runs) {
  Time longest;
  double height = 40;  // legend + axis
  for (const auto& run : runs) {
    longest = max(longest, run.result->window_end - run.result->window_begin);
    height += run_height(*run.result) + kRunGap;
  }
  const double span = std::max(1e-12, longest.seconds());
  const double scale = kWidth / span;
  std::ostringstream os;
  os << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(kLeft + kWidth + 40)
     << "\" height=\"" << num(height) << "\" font-family=\"Helvetica, Arial, sans-serif\">\n";
  os << "<style>.title{font-size:13px;font-weight:bold}.label{font-size:11px}"
        ".mb{font-size:9px;text-anchor:middle}.track{fill:#f4f4f4}"
        ".p2p{stroke:#b279a2;stroke-width:0.6;opacity:0.7}.axis{font-size:10px}</style>\n";
  os << "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  double y = 4;
  for (const auto& run : runs) {
    draw_run(os, run.title, *run.result, y, scale);
    y += run_height(*run.result) + kRunGap;
  }
  // Time axis: a 1-2-5 tick step giving at most ~12 ticks, labelled in s or ms.
  const double raw = span / 12;
  const double decade = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw <= decade ? decade : raw <= 2 * decade ? 2 * decade
                                      : raw <= 5 * decade      ? 5 * decade
                                                               : 10 * decade;
  const bool seconds = span >= 2.0;
  for (double t = 0; t <= span * 1.0001; t += step) {
    const double x = kLeft + t * scale;
    char label[32];
    std::snprintf(label, sizeof label, "%g %s", seconds ? t : t * 1e3, seconds ? "s" : "ms");
    os << "<line x1=\"" << num(x) << "\" y1=\"" << num(y - kRunGap) << "\" x2=\"" << num(x)
       << "\" y2=\"" << num(y - kRunGap + 4) << "\" stroke=\"#333\"/>";
    os << "<text class=\"axis\" text-anchor=\"middle\" x=\"" << num(x) << "\" y=\"" << num(y)
       << "\">" << label << "</text>\n";
  }
  double lx = kLeft;
  const double ly = y + 14;
  for (auto [name, colour] : {std::pair{"forward", "#4c78a8"}, std::pair{"backward", "#54a24b"},
                              std::pair{"weight gradient (W)", "#f58518"},
                              std::pair{"TP comm", "#8c8c8c"}, std::pair{"DP comm", "#e45756"},
                              std::pair{"pipeline p2p / sync", "#b279a2"},
                              std::pair{"optimizer", "#222222"}}) {
    os << "<rect x=\"" << num(lx) << "\" y=\"" << num(ly - 9) << "\" width=\"10\" height=\"10\" fill=\""
       << colour << "\"/><text class=\"axis\" x=\"" << num(lx + 14) << "\" y=\"" << num(ly) << "\">"
       << name << "</text>\n";
    lx += 150;
  }
  os << "</svg>\n";
  return os.str();
}

}  // namespace trainsim::report
