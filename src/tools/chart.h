// Drawing a chart on a cairo context, in pixels: panels with axes (ticks, grid, labels, titles),
// lines that break at NaN, a legend, heatmap cells and a colour bar. Layout belongs to the caller.
#pragma once
#include <cairo.h>

#include <string>
#include <vector>

#include "tools/axis_ticks.h"

namespace meshtrain::tools {

struct Rgb {
  double r, g, b;
};

// The i-th run's colour: Okabe-Ito, safe for colour-blind readers (yellow last: faint on white).
Rgb run_colour(size_t i);
// Viridis at t in [0, 1]: dark blue (0) to yellow (1), perceptually even and colour-blind safe.
Rgb viridis(double t);

struct Box {
  double x, y, w, h;
};

enum class Align { Start, Centre, End };

struct Text {
  double size = 13;
  bool bold = false;
  Align h = Align::Start, v = Align::Centre;
  double angle = 0;  // radians, clockwise on screen as cairo turns (-pi/2 reads bottom to top)
  Rgb colour{0.15, 0.15, 0.15};
};

void draw_text(cairo_t* cr, const std::string& text, double x, double y, const Text& style);
double text_width(cairo_t* cr, const std::string& text, double size, bool bold = false);

// A panel: its frame holds the title, the tick labels and axis titles around the plot area.
class Panel {
 public:
  // left_margin < 0: wide enough for y's tick labels.
  Panel(cairo_t* cr, Box frame, Ticks x, Ticks y, bool x_title, double left_margin = -1);
  // Room for y's title and tick labels: panels stacked in a column share the widest, so they align.
  static double left_margin_for(cairo_t* cr, const Ticks& y);

  const Box& plot() const { return plot_; }
  double px(double x) const;
  double py(double y) const;  // log axes take the value, not its log

  // Frame, grid and tick labels (y's only when y_labels), the titles.
  void draw_axes(const std::string& title, const std::string& x_title, const std::string& y_title,
                 bool y_labels = true) const;
  // A polyline through the finite points, broken where y is NaN (or not > 0 on a log axis);
  // a point alone between gaps is a dot.
  void draw_line(const std::vector<double>& x, const std::vector<double>& y, Rgb colour, bool dashed,
                 double width = 2) const;

  static constexpr double kTickSize = 12, kTitleSize = 15;

 private:
  cairo_t* cr_;
  Box frame_, plot_;
  Ticks x_, y_;
  bool x_title_;
};

struct LegendEntry {
  std::string name;
  Rgb colour;
  bool dashed = false;
  double width = 2;
};

// Entries in rows across width, from (x, y) down; returns the height used.
double draw_legend(cairo_t* cr, double x, double y, double width, const std::vector<LegendEntry>& entries);
double legend_height(cairo_t* cr, double width, const std::vector<LegendEntry>& entries);

// Cells of a heatmap in a panel's plot area: column c spans x_edges[c]..x_edges[c + 1] in data
// units, row r (from the top) 1/rows of the height; values[c][r] / vmax through viridis, NaN blank.
void draw_heatmap(const Panel& panel, cairo_t* cr, const std::vector<double>& x_edges,
                  const std::vector<std::vector<double>>& values, double vmax);

// A vertical colour bar for viridis over ticks.lo..ticks.hi, labelled on its right, titled along it.
void draw_colour_bar(cairo_t* cr, Box bar, const Ticks& ticks, const std::string& title);

}  // namespace meshtrain::tools
