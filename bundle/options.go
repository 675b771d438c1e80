package bundle

// Option tunes Open, VerifyManifest and Inspect.
type Option func(*options)

type options struct {
	limits      Limits
	readAhead   int
	payloadHash bool
}

// DefaultReadAhead is how many chunks a Reader verifies ahead of its
// consumer, on a second goroutine, unless WithReadAhead says otherwise.
const DefaultReadAhead = 4

func newOptions(opts []Option) options {
	o := options{readAhead: DefaultReadAhead}
	for _, f := range opts {
		f(&o)
	}
	o.limits = o.limits.withDefaults()
	return o
}

// WithLimits replaces the default hard limits.
func WithLimits(l Limits) Option { return func(o *options) { o.limits = l } }

// WithReadAhead sets how many chunks are read and verified ahead of the
// consumer on a second goroutine (each costs up to 2×MaxChunk of memory).
// Zero reads and verifies synchronously inside Read.
func WithReadAhead(n int) Option {
	return func(o *options) {
		if n < 0 {
			n = 0
		}
		o.readAhead = n
	}
}

// WithPayloadHash controls whether a Reader also checks each component's
// whole-payload SHA256 (default false). The signed chunk table covers the
// payload contiguously, so verifying every chunk already proves every byte;
// the component hash is one digest of the whole image, for a writer that
// reads an image back as one stream (slots.Target.Write) and for builder
// QA (mkbundle verify turns this on). When on, it runs on the
// consumer goroutine while the next chunks are verified on the other.
func WithPayloadHash(on bool) Option { return func(o *options) { o.payloadHash = on } }
