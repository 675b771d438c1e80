package device

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The daemon needs HTTP for two things only: GET health checks (usually on
// loopback) and offline installs from a URL on the local network. Both are
// served by this small HTTP/1.0 GET client instead of net/http, which would
// add over a megabyte (HTTP/2, TLS, MIME) to a binary that must stay small.
// Bundles are signed, so a URL install does not rely on the transport: only
// http:// is supported.

// ErrHTTP is wrapped by errors of HTTPGet.
var ErrHTTP = errors.New("device: http")

// HTTPResponse is the status and body of an HTTPGet.
type HTTPResponse struct {
	Status        int
	ContentLength int64 // -1 if unknown
	Header        map[string]string
	Body          io.ReadCloser
}

// HTTPGet sends "GET" for rawURL (http:// only) and returns the response;
// the caller closes Body. Redirects are not followed.
func HTTPGet(ctx context.Context, rawURL string, timeout time.Duration) (*HTTPResponse, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHTTP, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("%w: %s: only http:// URLs are supported", ErrHTTP, rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	var d net.Dialer
	cancel := context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %v", ErrHTTP, err)
	}
	after := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	stop := func() { after(); cancel() }
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	path := u.RequestURI()
	req := "GET " + path + " HTTP/1.0\r\nHost: " + u.Host + "\r\nUser-Agent: autopatchd\r\nAccept: */*\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %v", ErrHTTP, err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	line, err := br.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: read status: %v", ErrHTTP, err)
	}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		conn.Close()
		return nil, fmt.Errorf("%w: bad status line %q", ErrHTTP, strings.TrimSpace(line))
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: bad status line %q", ErrHTTP, strings.TrimSpace(line))
	}
	resp := &HTTPResponse{Status: code, ContentLength: -1, Header: map[string]string{}}
	for n := 0; ; n++ {
		l, err := br.ReadString('\n')
		if err != nil || n > 100 {
			conn.Close()
			return nil, fmt.Errorf("%w: read header: %v", ErrHTTP, err)
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		resp.Header[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if te := resp.Header["transfer-encoding"]; te != "" && !strings.EqualFold(te, "identity") {
		conn.Close()
		return nil, fmt.Errorf("%w: unsupported transfer encoding %q", ErrHTTP, te)
	}
	var body io.Reader = br
	if cl, err := strconv.ParseInt(resp.Header["content-length"], 10, 64); err == nil && cl >= 0 {
		resp.ContentLength = cl
		body = io.LimitReader(br, cl)
	}
	resp.Body = &httpBody{Reader: body, conn: conn, stop: stop, want: resp.ContentLength}
	stop = nil // the body owns it now
	return resp, nil
}

type httpBody struct {
	io.Reader
	conn net.Conn
	stop func()
	want int64
	got  int64
}

func (b *httpBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	b.got += int64(n)
	if err == io.EOF && b.want >= 0 && b.got < b.want {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *httpBody) Close() error {
	b.stop()
	return b.conn.Close()
}
