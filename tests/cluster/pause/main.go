// pause is the sandbox ("infra") container of the local real node's pods: PID 1 of each pod,
// holding its namespaces. It waits forever, reaps orphans (pods with shareProcessNamespace), and
// exits 0 on SIGINT or SIGTERM. There is no registry here to pull registry.k8s.io/pause from, so
// tests/cluster/build.sh builds this and cluster.sh imports it into containerd under that name.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if os.Getpid() != 1 {
		os.Stderr.WriteString("warning: pause should be PID 1\n")
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
