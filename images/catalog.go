package images

import (
	"errors"
	"time"
)

// The catalog's records: immutable name@version entries pointing at blob digests, and channels
// (name@production, name@staging, …) that point at versions and remember every move. The store
// keeps them (internal/store); these are the values the API, the jobs and the CLI pass around.

// Errors of the catalog's rules, whoever keeps the catalog.
var (
	ErrImmutable = errors.New("name@version is immutable and already names other bytes")
	ErrInUse     = errors.New("the image is in use")
	ErrNoHistory = errors.New("the channel has no earlier version to roll back to")
	ErrConflict  = errors.New("conflicts with the catalog")
)

// Image is one name@version of the catalog.
type Image struct {
	Name         string `json:"name"`
	Version      string `json:"version"`
	Digest       Digest `json:"digest"` // of the raw image
	Size         int64  `json:"size"`
	DataBytes    int64  `json:"data_bytes"`  // bytes in non-zero blocks
	DataBlocks   int    `json:"data_blocks"` // non-zero blocks
	ManifestHash Hash   `json:"manifest_hash"`
	// Source is where the image was imported from, without credentials (RedactSource), and
	// SourceRemoved lists what was taken out (names, never values).
	Source        string    `json:"source,omitempty"`
	SourceRemoved []string  `json:"source_removed,omitempty"`
	Format        string    `json:"format,omitempty"`
	Imported      time.Time `json:"imported"`
	ImportedBy    string    `json:"imported_by,omitempty"`
	// Channel is the channel (name@channel) the image was resolved through when the reference
	// named one; it is not part of the catalog entry. A machine assigned this image follows it.
	Channel string `json:"channel,omitempty"`
}

// Ref is the image's name@version.
func (i Image) Ref() Ref { return Ref{Name: i.Name, Tag: i.Version} }

// ChannelMove is one change of a channel's version.
type ChannelMove struct {
	Time   time.Time `json:"time"`
	By     string    `json:"by"`
	Action string    `json:"action"` // promote or rollback
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
}

// Channel points an image name's channel at one of its versions.
type Channel struct {
	Name    string        `json:"name"`
	Channel string        `json:"channel"`
	Version string        `json:"version"`
	History []ChannelMove `json:"history"`
}

// Pruned is one image a prune removed from the catalog; BlobFree says that no other entry has
// its digest, so that its blob may go too.
type Pruned struct {
	Image    Image
	BlobFree bool
}
