module github.com/leveret-mq/leveret/cmd/leveret-perf

go 1.26.8

require github.com/leveret-mq/leveret v0.0.0

require (
	github.com/HdrHistogram/hdrhistogram-go v1.1.2
	github.com/stretchr/testify v1.12.1
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect

replace github.com/leveret-mq/leveret => ../../
