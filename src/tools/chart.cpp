#include "tools/chart.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace meshtrain::tools {
namespace {

constexpr const char* kFont = "DejaVu Sans";
constexpr Rgb kGrid{0.88, 0.88, 0.88}, kMinorGrid{0.95, 0.95, 0.95}, kFrame{0.55, 0.55, 0.55};
constexpr double kLegendRow = 22, kSwatch = 30;

void set_colour(cairo_t* cr, Rgb c) { cairo_set_source_rgb(cr, c.r, c.g, c.b); }

// The middle of a pixel, so that 1-pixel lines are crisp rather than two grey rows.
double crisp(double v) { return std::floor(v) + 0.5; }

void set_font(cairo_t* cr, double size, bool bold) {
  cairo_select_font_face(cr, kFont, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

double entry_width(cairo_t* cr, const LegendEntry& e) { return kSwatch + 6 + text_width(cr, e.name, 13) + 24; }

// Entries per row, wrapping at width.
std::vector<std::vector<size_t>> legend_rows(cairo_t* cr, double width, const std::vector<LegendEntry>& entries) {
  std::vector<std::vector<size_t>> rows;
  double used = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const double w = entry_width(cr, entries[i]);
    if (rows.empty() || (used + w > width && !rows.back().empty())) {
      rows.emplace_back();
      used = 0;
    }
    rows.back().push_back(i);
    used += w;
  }
  return rows;
}

}  // namespace

Rgb run_colour(size_t i) {
  static constexpr std::array<Rgb, 8> kOkabeIto{{{0.000, 0.447, 0.698},    // blue
                                                 {0.835, 0.369, 0.000},    // vermillion
                                                 {0.000, 0.620, 0.451},    // bluish green
                                                 {0.800, 0.475, 0.655},    // reddish purple
                                                 {0.902, 0.624, 0.000},    // orange
                                                 {0.337, 0.706, 0.914},    // sky blue
                                                 {0.000, 0.000, 0.000},    // black
                                                 {0.941, 0.894, 0.259}}};  // yellow
  return kOkabeIto[i % kOkabeIto.size()];
}

Rgb viridis(double t) {
  static constexpr std::array<Rgb, 11> kStops{{{0.267, 0.004, 0.329}, {0.282, 0.141, 0.459}, {0.255, 0.267, 0.529},
                                               {0.208, 0.373, 0.553}, {0.165, 0.471, 0.557}, {0.129, 0.569, 0.549},
                                               {0.133, 0.659, 0.518}, {0.267, 0.749, 0.439}, {0.478, 0.820, 0.318},
                                               {0.741, 0.875, 0.149}, {0.992, 0.906, 0.145}}};
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * (kStops.size() - 1);
  const size_t i = std::min(static_cast<size_t>(t), kStops.size() - 2);
  const double f = t - i;
  const Rgb a = kStops[i], b = kStops[i + 1];
  return {a.r + f * (b.r - a.r), a.g + f * (b.g - a.g), a.b + f * (b.b - a.b)};
}

void draw_text(cairo_t* cr, const std::string& text, double x, double y, const Text& style) {
  cairo_save(cr);
  set_font(cr, style.size, style.bold);
  cairo_text_extents_t te;
  cairo_font_extents_t fe;
  cairo_text_extents(cr, text.c_str(), &te);
  cairo_font_extents(cr, &fe);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, style.angle);
  const double dx = style.h == Align::Start ? 0 : style.h == Align::Centre ? -te.x_advance / 2 : -te.x_advance;
  const double dy = style.v == Align::Start ? fe.ascent : style.v == Align::Centre ? (fe.ascent - fe.descent) / 2 : -fe.descent;
  set_colour(cr, style.colour);
  cairo_move_to(cr, dx, dy);
  cairo_show_text(cr, text.c_str());
  cairo_restore(cr);
}

double text_width(cairo_t* cr, const std::string& text, double size, bool bold) {
  cairo_save(cr);
  set_font(cr, size, bold);
  cairo_text_extents_t te;
  cairo_text_extents(cr, text.c_str(), &te);
  cairo_restore(cr);
  return te.x_advance;
}

Panel::Panel(cairo_t* cr, Box frame, Ticks x, Ticks y, bool x_title, double left_margin)
    : cr_(cr), frame_(frame), x_(std::move(x)), y_(std::move(y)), x_title_(x_title) {
  if (left_margin < 0) left_margin = left_margin_for(cr, y_);
  const double top = kTitleSize + 14, bottom = kTickSize + 10 + (x_title ? kTickSize + 12 : 0);
  plot_ = {frame.x + left_margin, frame.y + top, frame.w - left_margin - 16, frame.h - top - bottom};
}

double Panel::left_margin_for(cairo_t* cr, const Ticks& y) {
  double widest = 0;
  for (double v : y.values) widest = std::max(widest, text_width(cr, tick_label(v, y), kTickSize));
  return 4 + kTickSize + 10 + widest + 8;  // y title, gap, labels, gap
}

double Panel::px(double x) const { return plot_.x + (x - x_.lo) / (x_.hi - x_.lo) * plot_.w; }

double Panel::py(double y) const {
  const double t = y_.log ? (std::log10(y) - std::log10(y_.lo)) / (std::log10(y_.hi) - std::log10(y_.lo))
                          : (y - y_.lo) / (y_.hi - y_.lo);
  return plot_.y + plot_.h * (1 - t);
}

void Panel::draw_axes(const std::string& title, const std::string& x_title, const std::string& y_title,
                      bool y_labels) const {
  cairo_t* cr = cr_;
  cairo_save(cr);
  cairo_set_line_width(cr, 1);
  auto hline = [&](double y) {
    cairo_move_to(cr, plot_.x, crisp(y));
    cairo_line_to(cr, plot_.x + plot_.w, crisp(y));
  };
  if (y_labels) {
    set_colour(cr, kMinorGrid);
    for (double v : y_.minor) hline(py(v));
    cairo_stroke(cr);
    set_colour(cr, kGrid);
    for (double v : y_.values) hline(py(v));
    cairo_stroke(cr);
  }
  set_colour(cr, kGrid);
  for (double v : x_.values) {
    cairo_move_to(cr, crisp(px(v)), plot_.y);
    cairo_line_to(cr, crisp(px(v)), plot_.y + plot_.h);
  }
  cairo_stroke(cr);
  set_colour(cr, kFrame);
  cairo_rectangle(cr, crisp(plot_.x), crisp(plot_.y), std::round(plot_.w), std::round(plot_.h));
  cairo_stroke(cr);
  cairo_restore(cr);

  Text tick{.size = kTickSize, .h = Align::Centre, .v = Align::Start};
  for (double v : x_.values) draw_text(cr, tick_label(v, x_), px(v), plot_.y + plot_.h + 5, tick);
  if (y_labels) {
    tick.h = Align::End;
    tick.v = Align::Centre;
    for (double v : y_.values) draw_text(cr, tick_label(v, y_), plot_.x - 7, py(v), tick);
  }
  draw_text(cr, title, plot_.x + plot_.w / 2, frame_.y + 4,
            {.size = kTitleSize, .bold = true, .h = Align::Centre, .v = Align::Start, .colour = {0, 0, 0}});
  const Text axis_title{.size = kTickSize + 1, .h = Align::Centre, .v = Align::Start};
  if (x_title_) draw_text(cr, x_title, plot_.x + plot_.w / 2, plot_.y + plot_.h + kTickSize + 12, axis_title);
  Text vertical = axis_title;
  vertical.angle = -M_PI / 2;
  draw_text(cr, y_title, frame_.x + 4, plot_.y + plot_.h / 2, vertical);
}

void Panel::draw_line(const std::vector<double>& x, const std::vector<double>& y, Rgb colour, bool dashed,
                      double width) const {
  auto usable = [&](size_t i) { return i < x.size() && i < y.size() && std::isfinite(x[i]) && std::isfinite(y[i]) && (!y_.log || y[i] > 0); };
  cairo_t* cr = cr_;
  cairo_save(cr);
  cairo_rectangle(cr, plot_.x - 3, plot_.y - 3, plot_.w + 6, plot_.h + 6);
  cairo_clip(cr);
  set_colour(cr, colour);
  cairo_set_line_width(cr, width);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  if (dashed) {
    const double dash[] = {7, 4};
    cairo_set_dash(cr, dash, 2, 0);
  }
  std::vector<size_t> alone;  // points with no usable neighbour
  for (size_t i = 0; i < y.size(); ++i) {
    if (!usable(i)) continue;
    const bool joined_before = i > 0 && usable(i - 1);
    if (!joined_before && !usable(i + 1)) alone.push_back(i);
    if (joined_before)
      cairo_line_to(cr, px(x[i]), py(y[i]));
    else
      cairo_move_to(cr, px(x[i]), py(y[i]));
  }
  cairo_stroke(cr);
  for (size_t i : alone) {
    cairo_new_sub_path(cr);
    cairo_arc(cr, px(x[i]), py(y[i]), width + 0.5, 0, 2 * M_PI);
  }
  if (!alone.empty()) cairo_fill(cr);
  cairo_restore(cr);
}

double legend_height(cairo_t* cr, double width, const std::vector<LegendEntry>& entries) {
  return kLegendRow * static_cast<double>(legend_rows(cr, width, entries).size());
}

double draw_legend(cairo_t* cr, double x, double y, double width, const std::vector<LegendEntry>& entries) {
  const auto rows = legend_rows(cr, width, entries);
  for (size_t r = 0; r < rows.size(); ++r) {
    double row_width = 0;
    for (size_t i : rows[r]) row_width += entry_width(cr, entries[i]);
    double at = x + std::max(0.0, (width - row_width) / 2);  // centred
    const double mid = y + kLegendRow * (r + 0.5);
    for (size_t i : rows[r]) {
      const auto& e = entries[i];
      cairo_save(cr);
      set_colour(cr, e.colour);
      cairo_set_line_width(cr, e.width);
      if (e.dashed) {
        const double dash[] = {7, 4};
        cairo_set_dash(cr, dash, 2, 0);
      }
      cairo_move_to(cr, at, mid);
      cairo_line_to(cr, at + kSwatch, mid);
      cairo_stroke(cr);
      cairo_restore(cr);
      draw_text(cr, e.name, at + kSwatch + 6, mid, {.size = 13});
      at += entry_width(cr, e);
    }
  }
  return kLegendRow * static_cast<double>(rows.size());
}

void draw_heatmap(const Panel& panel, cairo_t* cr, const std::vector<double>& x_edges,
                  const std::vector<std::vector<double>>& values, double vmax) {
  const Box& p = panel.plot();
  cairo_save(cr);
  cairo_rectangle(cr, p.x, p.y, p.w, p.h);
  cairo_clip(cr);
  for (size_t c = 0; c < values.size() && c + 1 < x_edges.size(); ++c) {
    // Whole pixels, so that neighbouring cells leave no hairline seams.
    const double x0 = std::round(panel.px(x_edges[c])), x1 = std::round(panel.px(x_edges[c + 1]));
    const size_t rows = values[c].size();
    for (size_t r = 0; r < rows; ++r) {
      if (!std::isfinite(values[c][r])) continue;
      const double y0 = std::round(p.y + p.h * r / rows), y1 = std::round(p.y + p.h * (r + 1) / rows);
      set_colour(cr, viridis(values[c][r] / vmax));
      cairo_rectangle(cr, x0, y0, std::max(1.0, x1 - x0), y1 - y0);
      cairo_fill(cr);
    }
  }
  cairo_restore(cr);
}

void draw_colour_bar(cairo_t* cr, Box bar, const Ticks& ticks, const std::string& title) {
  cairo_save(cr);
  cairo_pattern_t* gradient = cairo_pattern_create_linear(0, bar.y + bar.h, 0, bar.y);
  for (int i = 0; i <= 20; ++i) {
    const Rgb c = viridis(i / 20.0);
    cairo_pattern_add_color_stop_rgb(gradient, i / 20.0, c.r, c.g, c.b);
  }
  cairo_set_source(cr, gradient);
  cairo_rectangle(cr, bar.x, bar.y, bar.w, bar.h);
  cairo_fill(cr);
  cairo_pattern_destroy(gradient);
  set_colour(cr, kFrame);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, crisp(bar.x), crisp(bar.y), std::round(bar.w), std::round(bar.h));
  cairo_stroke(cr);
  cairo_restore(cr);
  double widest = 0;
  for (double v : ticks.values) {
    const double y = bar.y + bar.h * (1 - (v - ticks.lo) / (ticks.hi - ticks.lo));
    const std::string label = tick_label(v, ticks);
    widest = std::max(widest, text_width(cr, label, Panel::kTickSize));
    draw_text(cr, label, bar.x + bar.w + 5, y, {.size = Panel::kTickSize});
  }
  draw_text(cr, title, bar.x + bar.w + 5 + widest + 8, bar.y + bar.h / 2,
            {.size = Panel::kTickSize + 1, .h = Align::Centre, .v = Align::Start, .angle = -M_PI / 2});
}

}  // namespace meshtrain::tools
