#include "tools/plot_figure.h"

#include <cairo-svg.h>
#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "tools/chart.h"
#include "util/check.h"

namespace meshtrain::tools {
namespace {

struct LineSpec {
  const char* key;
  const char* title;
  const char* y_title;
  bool log_allowed;  // loss and grad norm span decades early in training
  bool from_zero;    // amounts read against zero: a flat curve must not fill the panel
};

// The line panels, in reading order; each appears when some run logged its key.
constexpr LineSpec kLines[] = {
    {"loss", "Loss", "cross-entropy (nats/token)", true, false},
    {"lr", "Learning rate", "learning rate", false, false},
    {"grad_norm", "Gradient norm", "global L2 norm", true, false},
    {"tokens_per_s", "Throughput", "tokens / s", false, true},
    {"peak_memory_mib", "Peak memory", "MiB", false, true},
    {"aux_loss", "Router load-balancing loss", "aux loss", false, false},
};

constexpr double kMargin = 16, kPanelHeight = 290, kXTitleHeight = 25, kColourBarSpace = 120;

// The loss panel also holds eval_loss.
std::vector<std::string> keys_of(const LineSpec& spec) {
  if (std::string(spec.key) == "loss") return {"loss", "eval_loss"};
  return {spec.key};
}

bool any_run_has(const std::vector<PlotRun>& runs, const LineSpec& spec) {
  for (const auto& r : runs)
    for (const auto& key : keys_of(spec))
      if (r.metrics.has(key)) return true;
  return false;
}

// eval_loss is logged at eval steps only: its points are joined across the rows without it.
std::pair<std::vector<double>, std::vector<double>> finite_points(const RunMetrics& m, const std::string& key) {
  std::pair<std::vector<double>, std::vector<double>> out;
  const auto& v = m.values(key);
  for (size_t i = 0; i < v.size(); ++i)
    if (std::isfinite(v[i])) out.first.push_back(m.step[i]), out.second.push_back(v[i]);
  return out;
}

Ticks value_ticks(const std::vector<PlotRun>& runs, const LineSpec& spec) {
  std::vector<double> values;
  for (const auto& r : runs)
    for (const auto& key : keys_of(spec))
      for (double v : r.metrics.values(key))
        if (std::isfinite(v)) values.push_back(v);
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  if (spec.log_allowed && wants_log_scale(values)) return log_ticks(*lo, *hi);
  return linear_ticks(spec.from_zero ? std::min(*lo, 0.0) : *lo, *hi, 6);
}

// Runs that reproduce each other (parallel layouts of one job) draw the same curve: earlier runs
// are drawn wider, underneath, so that every colour stays visible.
double line_width(size_t run, size_t runs) { return runs <= 4 ? 1.8 + 1.0 * static_cast<double>(runs - 1 - run) : 2.0; }

struct LinePanel {
  const LineSpec* spec;
  Ticks y;
};

void draw_line_panel(cairo_t* cr, Box frame, const LinePanel& line, const std::vector<PlotRun>& runs, const Ticks& x,
                     bool x_title, double left_margin) {
  const LineSpec& spec = *line.spec;
  Panel panel(cr, frame, x, line.y, x_title, left_margin);
  panel.draw_axes(std::string(spec.title) + (line.y.log ? " (log scale)" : ""), "step", spec.y_title);
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& m = runs[i].metrics;
    const double width = line_width(i, runs.size());
    if (m.has(spec.key)) panel.draw_line(m.step, m.values(spec.key), run_colour(i), false, width);
    if (std::string(spec.key) == "loss" && m.has("eval_loss")) {
      const auto [steps, values] = finite_points(m, "eval_loss");
      panel.draw_line(steps, values, run_colour(i), true, width);
    }
  }
}

// Expert load of one MoE run: a column per logged interval, a row per (layer, expert), the
// expert's share of its layer's token assignments in that interval.
struct Routing {
  std::vector<double> x_edges;
  std::vector<std::vector<double>> share;  // [column][layer * experts + expert]
  size_t layers = 0, experts = 0;
  double max_share = 0;
};

Routing routing_of(const RunMetrics& m) {
  Routing r;
  const auto& steps = m.step;
  for (size_t i = 0; i < steps.size(); ++i) {
    const auto& counts = m.tokens_per_expert[i];
    if (counts.empty()) continue;
    // An interval runs from the previous logged step; the first one as long as the second.
    const double start = i > 0 ? steps[i - 1] : steps.size() > 1 ? std::max(0.0, 2 * steps[0] - steps[1]) : steps[0] - 1;
    if (r.x_edges.empty() || r.x_edges.back() != start) {
      if (!r.x_edges.empty()) r.share.emplace_back();  // a gap: an empty column
      r.x_edges.push_back(start);
    }
    r.x_edges.push_back(steps[i]);
    r.layers = counts.size();
    r.experts = counts[0].size();
    auto& column = r.share.emplace_back();
    for (const auto& layer : counts) {
      double total = 0;
      for (double c : layer) total += c;
      for (double c : layer) {
        column.push_back(total > 0 ? c / total : NAN);
        if (total > 0) r.max_share = std::max(r.max_share, c / total);
      }
    }
  }
  return r;
}

double routing_height(const RunMetrics& m) {
  const auto& counts = *std::find_if(m.tokens_per_expert.begin(), m.tokens_per_expert.end(),
                                     [](const auto& c) { return !c.empty(); });
  const double rows = static_cast<double>(counts.size() * counts[0].size());
  return std::clamp(rows * 16, 170.0, 440.0) + Panel::kTitleSize + 14 + Panel::kTickSize + 10 + kXTitleHeight;
}

// The row labels left of a heatmap: "layer l" per group, expert numbers when the rows are tall
// enough to read, a separator between layers.
void draw_routing_rows(cairo_t* cr, const Panel& panel, const Routing& r, double label_x) {
  const Box& p = panel.plot();
  const double row = p.h / static_cast<double>(r.layers * r.experts), group = row * r.experts;
  const size_t every = static_cast<size_t>(std::ceil(18 / group));  // layers per label when groups are thin
  for (size_t l = 0; l < r.layers; ++l) {
    const double top = p.y + group * l;
    if (l % every == 0) draw_text(cr, "layer " + std::to_string(l), label_x, top + group / 2, {.size = Panel::kTickSize});
    if (row >= 12)
      for (size_t e = 0; e < r.experts; ++e)
        draw_text(cr, std::to_string(e), p.x - 6, top + row * (e + 0.5),
                  {.size = Panel::kTickSize - 1, .h = Align::End, .colour = {0.35, 0.35, 0.35}});
    if (l > 0) {
      cairo_save(cr);
      cairo_set_source_rgb(cr, 1, 1, 1);
      cairo_set_line_width(cr, 2);
      cairo_move_to(cr, p.x, std::round(top));
      cairo_line_to(cr, p.x + p.w, std::round(top));
      cairo_stroke(cr);
      cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
      cairo_set_line_width(cr, 1);
      cairo_move_to(cr, label_x, std::floor(top) + 0.5);
      cairo_line_to(cr, p.x, std::floor(top) + 0.5);
      cairo_stroke(cr);
      cairo_restore(cr);
    }
  }
}

void draw_routing_panel(cairo_t* cr, Box frame, const PlotRun& run, const Ticks& x) {
  const Routing r = routing_of(run.metrics);
  const double label_x = frame.x + 4 + Panel::kTickSize + 12;
  const double left = label_x - frame.x + text_width(cr, "layer " + std::to_string(r.layers - 1), Panel::kTickSize) + 10 +
                      text_width(cr, std::to_string(r.experts - 1), Panel::kTickSize - 1) + 8;
  Panel panel(cr, {frame.x, frame.y, frame.w - kColourBarSpace, frame.h}, x, linear_ticks(0, 1), true, left);
  const Ticks shares = linear_ticks(0, std::max(r.max_share, 1e-3), 6);
  draw_heatmap(panel, cr, r.x_edges, r.share, shares.hi);
  panel.draw_axes("Expert load: " + run.label + " (" + std::to_string(r.layers) + " MoE layers x " +
                      std::to_string(r.experts) + " experts)",
                  "step", "MoE layer / expert", false);
  draw_routing_rows(cr, panel, r, label_x);
  const Box& p = panel.plot();
  draw_colour_bar(cr, {p.x + p.w + 28, p.y, 16, p.h}, shares, "share of the layer's tokens");
}

Ticks step_ticks(const std::vector<PlotRun>& runs) {
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& r : runs) lo = std::min(lo, r.metrics.step.front()), hi = std::max(hi, r.metrics.step.back());
  return linear_ticks(std::min(lo, 0.0), hi, 7);
}

struct Layout {
  double width, height, legend_height, panels_y, panel_w, line_left_margin = 0;
  std::vector<LinePanel> lines;
  size_t columns;
  std::vector<size_t> moe_runs;
};

std::vector<LegendEntry> legend_of(const std::vector<PlotRun>& runs) {
  std::vector<LegendEntry> entries;
  bool eval = false;
  for (size_t i = 0; i < runs.size(); ++i) {
    entries.push_back({runs[i].label, run_colour(i), false, line_width(i, runs.size())});
    eval = eval || runs[i].metrics.has("eval_loss");
  }
  if (eval) entries.push_back({"eval_loss (dashed)", {0.45, 0.45, 0.45}, true});
  return entries;
}

Layout layout_of(cairo_t* cr, const std::vector<PlotRun>& runs, int width) {
  Layout l{};
  l.width = width;
  for (const auto& spec : kLines)
    if (any_run_has(runs, spec)) {
      l.lines.push_back({&spec, value_ticks(runs, spec)});
      l.line_left_margin = std::max(l.line_left_margin, Panel::left_margin_for(cr, l.lines.back().y));
    }
  l.columns = l.lines.size() > 1 ? 2 : 1;
  l.panel_w = (width - 2 * kMargin) / l.columns;
  l.legend_height = legend_height(cr, width - 2 * kMargin, legend_of(runs));
  l.panels_y = 10 + l.legend_height + 8;
  const size_t rows = (l.lines.size() + l.columns - 1) / l.columns;
  l.height = l.panels_y + rows * kPanelHeight + kXTitleHeight;
  for (size_t i = 0; i < runs.size(); ++i)
    if (runs[i].metrics.has_moe_routing()) {
      l.moe_runs.push_back(i);
      l.height += 12 + routing_height(runs[i].metrics);
    }
  l.height += kMargin;
  return l;
}

void draw_figure(cairo_t* cr, const Layout& l, const std::vector<PlotRun>& runs) {
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  draw_legend(cr, kMargin, 10, l.width - 2 * kMargin, legend_of(runs));
  const Ticks x = step_ticks(runs);
  double y = l.panels_y;
  for (size_t i = 0; i < l.lines.size(); ++i) {
    const size_t row = i / l.columns, column = i % l.columns;
    const bool bottom = i + l.columns >= l.lines.size();  // the lowest panel of its column names the axis
    const Box frame{kMargin + column * l.panel_w, l.panels_y + row * kPanelHeight, l.panel_w - 12,
                    kPanelHeight - 8 + (bottom ? kXTitleHeight : 0)};
    draw_line_panel(cr, frame, l.lines[i], runs, x, bottom, l.line_left_margin);
    y = std::max(y, frame.y + frame.h);
  }
  for (size_t i : l.moe_runs) {
    const double h = routing_height(runs[i].metrics);
    draw_routing_panel(cr, {kMargin, y + 12, l.width - 2 * kMargin, h}, runs[i], x);
    y += 12 + h;
  }
}

cairo_status_t append_bytes(void* out, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(out)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

using Surface = std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)>;
using Context = std::unique_ptr<cairo_t, decltype(&cairo_destroy)>;

void check_status(cairo_status_t status, const char* what) {
  MT_CHECK(status == CAIRO_STATUS_SUCCESS, "cairo could not ", what, ": ", cairo_status_to_string(status));
}

}  // namespace

std::string render_figure(const std::vector<PlotRun>& runs, ImageFormat format, int width) {
  MT_CHECK(!runs.empty(), "a figure needs at least one run");
  MT_CHECK(width >= 400 && width <= 10000, "figure width ", width, " is outside 400..10000 pixels");
  // Text is measured on a scratch surface, since the page's height depends on it.
  Surface scratch(cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1), cairo_surface_destroy);
  Context measure(cairo_create(scratch.get()), cairo_destroy);
  const Layout layout = layout_of(measure.get(), runs, width);
  const int height = static_cast<int>(std::ceil(layout.height));
  std::string bytes;
  Surface surface(format == ImageFormat::Png
                      ? cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height)
                      : cairo_svg_surface_create_for_stream(append_bytes, &bytes, width, height),
                  cairo_surface_destroy);
  check_status(cairo_surface_status(surface.get()), "create the image");
#if CAIRO_VERSION >= CAIRO_VERSION_ENCODE(1, 16, 0)
  if (format == ImageFormat::Svg) cairo_svg_surface_set_document_unit(surface.get(), CAIRO_SVG_UNIT_PX);
#endif
  {
    Context cr(cairo_create(surface.get()), cairo_destroy);
    draw_figure(cr.get(), layout, runs);
    check_status(cairo_status(cr.get()), "draw the figure");
  }
  if (format == ImageFormat::Png)
    check_status(cairo_surface_write_to_png_stream(surface.get(), append_bytes, &bytes), "encode the PNG");
  cairo_surface_finish(surface.get());
  check_status(cairo_surface_status(surface.get()), "finish the image");
  return bytes;
}

}  // namespace meshtrain::tools
