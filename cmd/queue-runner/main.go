// Command queue-runner works the spool: local and remote delivery, retries,
// delay warnings and bounces; one pass (cron) or --daemon. See
// queue-runner(8).
package main

import (
	"fmt"
	"letterbox/pkg/delivery"
	"os"

	"letterbox/pkg/queue"
	"letterbox/pkg/sysexits"
)

func main() {
	if delivery.IsOwnerChild() {
		os.Exit(delivery.OwnerChildMain())
	}
	if err := queue.Run(queue.NewApp(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "queue-runner:", err)
		os.Exit(sysexits.Code(err))
	}
}
