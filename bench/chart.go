package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var clientColors = map[string]color.Color{
	cAMQP:    color.RGBA{R: 0x9e, G: 0x9e, B: 0x9e, A: 0xff},
	cAMQP16:  color.RGBA{R: 0x5f, G: 0x6b, B: 0x7a, A: 0xff},
	cLeveret: color.RGBA{R: 0xe0, G: 0x7a, B: 0x1f, A: 0xff},
	cRaw:     color.RGBA{R: 0x4a, G: 0x90, B: 0xc2, A: 0xff},
	cRawHand: color.RGBA{R: 0xa9, G: 0xcf, B: 0xe8, A: 0xff},
}

var clientLabels = map[string]string{
	cAMQP:    "amqp091-go",
	cAMQP16:  "amqp091-go, 16 goroutines",
	cLeveret: "leveret",
	cRaw:     "ceiling (raw codec, not a client)",
	cRawHand: "ceiling, acking on a second goroutine",
}

// drawChart writes a PNG with two panels: queue declares per second by
// added latency, and messages per second by messaging scenario.
func drawChart(path string, r *report) error {
	var declares, messaging []string
	for _, s := range r.scenarios {
		switch {
		case strings.HasPrefix(s, "declare-"):
			declares = append(declares, s)
		case s == sConsumers: // a table of its own, not messages per second
		default:
			messaging = append(messaging, s)
		}
	}
	var plots []*plot.Plot
	if len(declares) > 0 {
		names := make([]string, len(declares))
		for i, s := range declares {
			names[i] = "+" + strings.TrimSuffix(strings.TrimPrefix(s, "declare-"), "ms") + " ms each way"
		}
		p, err := barPanel(r, fmt.Sprintf("%d queue declares, added latency (median of %d)", r.cfg.declares, r.cfg.rounds), "declares/s (higher is better)", 1, declares, names,
			[]string{cAMQP, cAMQP16, cLeveret})
		if err != nil {
			return err
		}
		plots = append(plots, p)
	}
	if len(messaging) > 0 {
		short := map[string]string{sPublish: "publish", sConfirm: "publish +\nconfirms", sClientPub: "Client.\nPublish", sConsumeEach: "consume,\nack each", sConsumeMult: "consume,\nack ×100"}
		names := make([]string, len(messaging))
		for i, s := range messaging {
			names[i] = short[s]
		}
		p, err := barPanel(r, fmt.Sprintf("%d messages of %d B (median of %d)", r.cfg.messages, bodySize, r.cfg.rounds), "thousand messages/s (higher is better)", 1000, messaging, names,
			[]string{cAMQP, cLeveret, cRaw, cRawHand})
		if err != nil {
			return err
		}
		plots = append(plots, p)
	}
	if len(plots) == 0 {
		return nil
	}

	const panelW, h = 6 * vg.Inch, 4.5 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(panelW*vg.Length(len(plots)), h), vgimg.UseDPI(110))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 3,
		PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
	canvases := plot.Align([][]*plot.Plot{plots}, tiles, dc)
	for i, p := range plots {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// barPanel draws one group of bars per scenario, one bar per client,
// with the value written over each bar.
func barPanel(r *report, title, ylabel string, scale float64, scenarios, names, clients []string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Y.Label.Text = ylabel
	p.Y.Min = 0
	p.Y.Tick.Marker = niceTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(names...)
	p.X.Tick.Label.Font.Size = vg.Points(10)

	p.Add(plotter.NewGrid()) // first, so the bars cover it
	var present []string
	for _, c := range clients {
		for _, s := range scenarios {
			if _, ok := r.get(s, c); ok {
				present = append(present, c)
				break
			}
		}
	}
	barW := 12 * vg.Millimeter
	switch {
	case len(present) > 3:
		barW = 7 * vg.Millimeter
	case len(present) > 2:
		barW = 10 * vg.Millimeter
	}
	maxY := 0.0
	for i, c := range present {
		vals := make(plotter.Values, len(scenarios))
		xys := make(plotter.XYs, len(scenarios))
		labels := make([]string, len(scenarios))
		for j, s := range scenarios {
			st, ok := r.get(s, c)
			vals[j] = st.rate / scale
			xys[j] = plotter.XY{X: float64(j), Y: vals[j]}
			if ok { // no label where the client did not run
				labels[j] = shortNumber(vals[j])
			}
			maxY = max(maxY, vals[j])
		}
		bars, err := plotter.NewBarChart(vals, barW)
		if err != nil {
			return nil, err
		}
		bars.LineStyle.Width = 0
		bars.Color = clientColors[c]
		off := barW * (vg.Length(i) - vg.Length(len(present)-1)/2)
		bars.Offset = off
		p.Add(bars)
		p.Legend.Add(clientLabels[c], bars)

		lbl, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
		if err != nil {
			return nil, err
		}
		for k := range lbl.TextStyle {
			lbl.TextStyle[k].XAlign = draw.XCenter
			lbl.TextStyle[k].Font.Size = vg.Points(8)
		}
		lbl.Offset = vg.Point{X: off, Y: vg.Points(2)}
		p.Add(lbl)
	}
	p.Y.Max = maxY * 1.3 // room for the legend and the labels
	return p, nil
}

func shortNumber(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// niceTicks labels every major tick at a round step (1, 2 or 5 × 10^k),
// with about five of them on the axis.
type niceTicks struct{}

func (niceTicks) Ticks(min, max float64) []plot.Tick {
	if max <= min {
		return nil
	}
	step := math.Pow(10, math.Floor(math.Log10((max-min)/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if (max-min)/(step*m) <= 6 {
			step *= m
			break
		}
	}
	var ticks []plot.Tick
	for v := math.Ceil(min/step) * step; v <= max; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
		for i := 1; i < 5 && v+float64(i)*step/5 <= max; i++ {
			ticks = append(ticks, plot.Tick{Value: v + float64(i)*step/5}) // minor
		}
	}
	return ticks
}
