package bundle

import "errors"

// Sentinel errors. Every error returned by this package that stems from bad
// input wraps exactly one of these, so callers can classify failures with
// errors.Is while the message names the failed check, the component and the
// chunk index.
var (
	ErrSignature          = errors.New("bundle: signature mismatch")
	ErrUnknownKey         = errors.New("bundle: no signature by a trusted key")
	ErrRevokedKey         = errors.New("bundle: signed by a revoked key")
	ErrThreshold          = errors.New("bundle: signature threshold not met")
	ErrTruncated          = errors.New("bundle: truncated")
	ErrCorruptChunk       = errors.New("bundle: corrupt chunk")
	ErrTooLarge           = errors.New("bundle: exceeds a size limit")
	ErrUnsupportedVersion = errors.New("bundle: unsupported format version")
	ErrMalformed          = errors.New("bundle: malformed")
)
