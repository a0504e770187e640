package sser

import "github.com/prometheus/client_golang/prometheus"

// historyCollector reports, at scrape time, how deep history is: the
// events and bytes held, the streams holding any, and the age of the
// oldest event. It takes the hub's lock once per scrape and costs nothing
// per event.
type historyCollector struct{ h *hub }

var (
	historyEventsDesc  = prometheus.NewDesc("sser_history_events", "Events held in history for resuming clients, all streams.", nil, nil)
	historyBytesDesc   = prometheus.NewDesc("sser_history_bytes", "Bytes history holds, as counted against its byte bounds.", nil, nil)
	historyStreamsDesc = prometheus.NewDesc("sser_history_streams", "Streams holding at least one event in history.", nil, nil)
	historyAgeDesc     = prometheus.NewDesc("sser_history_oldest_age_seconds", "Age of the oldest event in history (0 when it holds none): how far back a resuming client can be and still get every event.", nil, nil)
)

func (c historyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- historyEventsDesc
	ch <- historyBytesDesc
	ch <- historyStreamsDesc
	ch <- historyAgeDesc
}

func (c historyCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.h
	h.mu.Lock()
	events, bytes, streams := h.hist.len(), h.hist.bytes, h.hist.streams
	var age float64
	if all := &h.hist.all.r; all.len() > 0 {
		// The front of the apply-order log is never an evicted entry.
		age = max(h.now().Sub(all.at(0).at).Seconds(), 0)
	}
	h.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(historyEventsDesc, prometheus.GaugeValue, float64(events))
	ch <- prometheus.MustNewConstMetric(historyBytesDesc, prometheus.GaugeValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(historyStreamsDesc, prometheus.GaugeValue, float64(streams))
	ch <- prometheus.MustNewConstMetric(historyAgeDesc, prometheus.GaugeValue, age)
}
