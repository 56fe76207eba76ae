// docker-api-pin serves the Docker Engine API on a unix socket of its own and forwards
// every request to the real daemon, naming an API version in each path that names none.
//
// Why: the Kubernetes v0.7 kubelet sends unversioned requests, which today's dockerd
// serves as its newest API version; that version refuses the request body the kubelet
// sends to start a container ("starting container with non-empty request body was
// deprecated since API v1.22 and removed in v1.24"). The same request under an old
// version (/v1.15/..., Docker 1.3's, which the kubelet was written against) still works.
// This is a declared deviation of the conformance suite, not part of the guide.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"regexp"
)

var versioned = regexp.MustCompile(`^/v[0-9]+\.[0-9]+/`)

func main() {
	listen := flag.String("listen", "/run/docker-api-pin.sock", "unix socket to serve on")
	upstream := flag.String("docker", "/var/run/docker.sock", "the Docker daemon's unix socket")
	version := flag.String("api-version", "1.15", "API version for requests that name none")
	flag.Parse()

	proxy := &httputil.ReverseProxy{
		Director: func(r *http.Request) {
			r.URL.Scheme, r.URL.Host = "http", "docker"
			if !versioned.MatchString(r.URL.Path) {
				r.URL.Path = "/v" + *version + r.URL.Path
				r.URL.RawPath = ""
			}
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", *upstream)
		}},
		FlushInterval: -1, // pulls and logs stream
	}
	os.Remove(*listen)
	sock, err := net.Listen("unix", *listen)
	if err != nil {
		log.Fatalf("docker-api-pin: %v", err)
	}
	if err := os.Chmod(*listen, 0o660); err != nil {
		log.Fatalf("docker-api-pin: %v", err)
	}
	log.Printf("docker-api-pin: %s -> %s, unversioned requests as API v%s", *listen, *upstream, *version)
	log.Fatal(http.Serve(sock, proxy))
}
