package store

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/imaged/imaged/images"
	"github.com/imaged/imaged/internal/machines"
)

// The image catalog: name@version → images.Image in bucketImages, name@channel →
// images.Channel in bucketChannels. The catalog's rules fail with the errors of package images
// (ErrImmutable, ErrInUse, ErrNoHistory, ErrConflict); what does not exist with ErrNotFound.

// redactSource takes the credentials out of the image's source (images.RedactSource).
func redactSource(i *images.Image) (changed bool) {
	clean, removed := images.RedactSource(i.Source)
	if removed == nil {
		return false
	}
	i.Source = clean
	i.SourceRemoved = append(i.SourceRemoved, removed...)
	return true
}

// redactSources takes the credentials out of the sources an imaged before this one stored as
// given (Open does it, in its migration transaction).
func redactSources(tx *bolt.Tx) error {
	b := tx.Bucket(bucketImages)
	if b == nil {
		return nil
	}
	var fixed []images.Image
	err := b.ForEach(func(_, v []byte) error {
		var img images.Image
		if jsonUnmarshal(v, &img) == nil && redactSource(&img) {
			fixed = append(fixed, img)
		}
		return nil
	})
	for _, img := range fixed {
		if err == nil {
			err = put(tx, bucketImages, img.Ref().String(), img)
		}
	}
	return err
}

func imageKey(name, version string) string { return name + "@" + version }

// PutImage records an image, its source without credentials (Image.Source). Registering the
// same name@version with the same digest again is a no-op; with another digest it is
// ErrImmutable.
func (s *Store) PutImage(img images.Image) (created bool, err error) {
	redactSource(&img)
	img.Channel = ""
	err = s.db.Update(func(tx *bolt.Tx) error {
		var old images.Image
		switch err := get(tx, bucketImages, img.Ref().String(), &old); {
		case err == nil && old.Digest == img.Digest:
			return nil
		case err == nil:
			return fmt.Errorf("store: %s: %w (%s); import it as a new version", img.Ref(), images.ErrImmutable, old.Digest)
		case !errors.Is(err, ErrNotFound):
			return err
		}
		created = true
		return put(tx, bucketImages, img.Ref().String(), img)
	})
	return created, err
}

// WithImageDigests runs fn with the set of digests the catalog's images have, inside a write
// transaction: no image is registered (PutImage) or removed until fn returns, so fn may remove
// the blobs the set lacks without one being registered meanwhile. fn must be quick (renames, not
// removals of large files) and must not call the Store: it would wait for itself.
func (s *Store) WithImageDigests(fn func(digests map[images.Digest]bool) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		digests := map[images.Digest]bool{}
		err := tx.Bucket(bucketImages).ForEach(func(_, v []byte) error {
			var x images.Image
			if err := jsonUnmarshal(v, &x); err != nil {
				return fmt.Errorf("store: images: %w", err)
			}
			digests[x.Digest] = true
			return nil
		})
		if err != nil {
			return err
		}
		return fn(digests)
	})
}

// Images lists the catalog, by name then import time.
func (s *Store) Images() ([]images.Image, error) {
	imgs, err := list[images.Image](s.db, bucketImages)
	sort.SliceStable(imgs, func(i, j int) bool {
		if imgs[i].Name != imgs[j].Name {
			return imgs[i].Name < imgs[j].Name
		}
		return imgs[i].Imported.Before(imgs[j].Imported)
	})
	return imgs, err
}

// Channels lists every channel.
func (s *Store) Channels() ([]images.Channel, error) {
	return list[images.Channel](s.db, bucketChannels)
}

// ResolveImage finds the image that ref names: name@version, name@channel (a channel wins over
// a version of the same name; the image returned says which channel in its Channel), or a
// digest (the latest imported of the versions with those bytes).
func (s *Store) ResolveImage(ref images.Ref) (images.Image, error) {
	if !ref.Digest.IsZero() {
		return s.imageByDigest(ref.Digest)
	}
	var img images.Image
	err := s.db.View(func(tx *bolt.Tx) error { return resolve(tx, ref, &img) })
	return img, err
}

// imageByDigest finds the image whose bytes have digest d: the latest imported, when several
// versions hold the same bytes.
func (s *Store) imageByDigest(d images.Digest) (images.Image, error) {
	var img images.Image
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketImages).ForEach(func(_, v []byte) error {
			var x images.Image
			if err := jsonUnmarshal(v, &x); err == nil && x.Digest == d && (!found || x.Imported.After(img.Imported)) {
				img, found = x, true
			}
			return nil
		})
	})
	if err == nil && !found {
		err = fmt.Errorf("store: no image has digest %s: %w", d, ErrNotFound)
	}
	return img, err
}

func resolve(tx *bolt.Tx, ref images.Ref, img *images.Image) error {
	name, tag := ref.Name, ref.Tag
	if name == "" || tag == "" {
		return fmt.Errorf("store: %q: %w", ref, images.ErrBadRef)
	}
	var ch images.Channel
	channel := ""
	if err := get(tx, bucketChannels, imageKey(name, tag), &ch); err == nil {
		tag, channel = ch.Version, imageKey(name, ch.Channel)
	}
	if err := get(tx, bucketImages, imageKey(name, tag), img); err != nil {
		return fmt.Errorf("store: image %s: %w", ref, err)
	}
	img.Channel = channel
	return nil
}

// ChannelDigests maps every channel (name@channel) to the digest of the version it points at.
func (s *Store) ChannelDigests() (map[string]images.Digest, error) {
	out := map[string]images.Digest{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChannels).ForEach(func(_, v []byte) error {
			var ch images.Channel
			if err := jsonUnmarshal(v, &ch); err != nil {
				return err
			}
			var img images.Image
			if err := get(tx, bucketImages, imageKey(ch.Name, ch.Version), &img); err != nil {
				return fmt.Errorf("store: channel %s@%s: %w", ch.Name, ch.Channel, err)
			}
			out[imageKey(ch.Name, ch.Channel)] = img.Digest
			return nil
		})
	})
	return out, err
}

// Promote points channel of image name at version, recording who did it.
func (s *Store) Promote(name, version, channel, by string) (images.Channel, error) {
	var ch images.Channel
	err := s.db.Update(func(tx *bolt.Tx) error {
		var img images.Image
		if err := get(tx, bucketImages, imageKey(name, version), &img); err != nil {
			return fmt.Errorf("store: image %s@%s: %w", name, version, err)
		}
		if err := get(tx, bucketImages, imageKey(name, channel), &img); err == nil {
			return fmt.Errorf("store: %q is a version of %s, so it cannot also be a channel: %w", channel, name, images.ErrConflict)
		}
		if err := get(tx, bucketChannels, imageKey(name, channel), &ch); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		ch.Name, ch.Channel = name, channel
		ch.History = append(ch.History, images.ChannelMove{Time: time.Now().UTC(), By: by, Action: "promote", From: ch.Version, To: version})
		ch.Version = version
		return put(tx, bucketChannels, imageKey(name, channel), ch)
	})
	return ch, err
}

// Rollback moves channel back to the version it pointed at before its current one.
func (s *Store) Rollback(name, channel, by string) (images.Channel, error) {
	var ch images.Channel
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := get(tx, bucketChannels, imageKey(name, channel), &ch); err != nil {
			return fmt.Errorf("store: channel %s@%s: %w", name, channel, err)
		}
		// What came before the current version is what the latest promotion *to* it replaced.
		// Rollbacks are skipped, so that rolling back twice goes back two promotions.
		prev := ""
		for i := len(ch.History) - 1; i >= 0; i-- {
			if mv := ch.History[i]; mv.Action == "promote" && mv.To == ch.Version {
				prev = mv.From
				break
			}
		}
		if prev == "" {
			return fmt.Errorf("store: %s@%s: %w", name, channel, images.ErrNoHistory)
		}
		var img images.Image
		if err := get(tx, bucketImages, imageKey(name, prev), &img); err != nil {
			return fmt.Errorf("store: %s@%s was deleted; promote a version instead: %w", name, prev, err)
		}
		ch.History = append(ch.History, images.ChannelMove{Time: time.Now().UTC(), By: by, Action: "rollback", From: ch.Version, To: prev})
		ch.Version = prev
		return put(tx, bucketChannels, imageKey(name, channel), ch)
	})
	return ch, err
}

// references says why an image may not be removed: channels that point at it and machines
// assigned (or running) its digest.
func references(tx *bolt.Tx, img images.Image) []string {
	var why []string
	_ = tx.Bucket(bucketChannels).ForEach(func(_, v []byte) error {
		var ch images.Channel
		if jsonUnmarshal(v, &ch) == nil && ch.Name == img.Name && ch.Version == img.Version {
			why = append(why, "channel "+ch.Name+"@"+ch.Channel)
		}
		return nil
	})
	_ = tx.Bucket(bucketMachines).ForEach(func(_, v []byte) error {
		var m machines.Machine
		if jsonUnmarshal(v, &m) == nil && (m.AssignedImage == img.Digest || m.CurrentImage == img.Digest) {
			why = append(why, "machine "+m.ID)
		}
		return nil
	})
	return why
}

// DeleteImage removes name@version unless a channel or a machine points at it. blobFree is true
// when no other catalog entry has the same digest, so that the caller may delete the blob.
func (s *Store) DeleteImage(name, version string) (img images.Image, blobFree bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := get(tx, bucketImages, imageKey(name, version), &img); err != nil {
			return fmt.Errorf("store: image %s@%s: %w", name, version, err)
		}
		if why := references(tx, img); len(why) > 0 {
			return fmt.Errorf("store: %s: %w by %s", img.Ref(), images.ErrInUse, strings.Join(why, ", "))
		}
		if err := tx.Bucket(bucketImages).Delete([]byte(img.Ref().String())); err != nil {
			return err
		}
		blobFree = !digestUsed(tx, img.Digest)
		return nil
	})
	return img, blobFree, err
}

func digestUsed(tx *bolt.Tx, digest images.Digest) bool {
	used := false
	_ = tx.Bucket(bucketImages).ForEach(func(_, v []byte) error {
		var x images.Image
		if jsonUnmarshal(v, &x) == nil && x.Digest == digest {
			used = true
		}
		return nil
	})
	return used
}

// Prune keeps the newest keep versions of every image name (by import time) and deletes the
// older ones, except those a channel or a machine points at, in one transaction.
func (s *Store) Prune(keep int) (removed []images.Pruned, kept map[string][]string, err error) {
	if keep < 1 {
		return nil, nil, fmt.Errorf("store: prune must keep at least 1 version per name, not %d", keep)
	}
	kept = map[string][]string{}
	err = s.db.Update(func(tx *bolt.Tx) error {
		byName := map[string][]images.Image{}
		_ = tx.Bucket(bucketImages).ForEach(func(_, v []byte) error {
			var x images.Image
			if jsonUnmarshal(v, &x) == nil {
				byName[x.Name] = append(byName[x.Name], x)
			}
			return nil
		})
		for _, imgs := range byName {
			sort.Slice(imgs, func(i, j int) bool { return imgs[i].Imported.After(imgs[j].Imported) })
			for _, img := range imgs[min(keep, len(imgs)):] {
				if why := references(tx, img); len(why) > 0 {
					kept[img.Ref().String()] = why
					continue
				}
				if err := tx.Bucket(bucketImages).Delete([]byte(img.Ref().String())); err != nil {
					return err
				}
				removed = append(removed, images.Pruned{Image: img})
			}
		}
		for i := range removed {
			removed[i].BlobFree = !digestUsed(tx, removed[i].Image.Digest)
		}
		return nil
	})
	return removed, kept, err
}

// AssignImage sets the digest machine id should run, and the channel (name@channel) it follows
// from now on: "" when the assignment named a version or a digest.
func (s *Store) AssignImage(id string, digest images.Digest, channel string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var m machines.Machine
		if err := get(tx, bucketMachines, id, &m); err != nil {
			return fmt.Errorf("store: machine %q: %w", id, err)
		}
		m.AssignedImage, m.AssignedChannel = digest, channel
		return put(tx, bucketMachines, id, m)
	})
}

// SetCurrentImage records the digest machine id was verified to run (zero: none).
func (s *Store) SetCurrentImage(id string, digest images.Digest) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var m machines.Machine
		if err := get(tx, bucketMachines, id, &m); err != nil {
			return fmt.Errorf("store: machine %q: %w", id, err)
		}
		m.CurrentImage = digest
		return put(tx, bucketMachines, id, m)
	})
}
