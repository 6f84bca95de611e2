package scanner

import "errors"

var (
	errNotRegular = errors.New("not a regular file")
	errSymlink    = errors.New("is a symbolic link")
)
