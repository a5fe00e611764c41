package main

import (
	"encoding"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// How the CLI prints what the API answered.

// output prints v, the answer of a call that failed with err or not: as JSON with -json, else
// as print writes it.
func output[T any](w io.Writer, asJSON bool, v T, err error, print func(io.Writer, T)) error {
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(w, v)
	}
	print(w, v)
	return nil
}

// printTable prints header and a row a value (columns apart by tabs), aligned; none, if not
// empty, stands for no values.
func printTable[T any](w io.Writer, header, none string, vs []T, row func(T) string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, v := range vs {
		fmt.Fprintln(tw, row(v))
	}
	if len(vs) == 0 && none != "" {
		fmt.Fprintln(tw, none)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// text is v's text (a MAC, an address, a digest): what JSON shows, "" for none (where a zero
// netip.Addr would print "invalid IP").
func text(v encoding.TextMarshaler) string {
	b, _ := v.MarshalText()
	return string(b)
}

func joinText[T encoding.TextMarshaler](vs []T, sep string) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = text(v)
	}
	return strings.Join(s, sep)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
