//go:build !linux

package main

import (
	"errors"
	"syscall"
	"time"
)

var errLinuxOnly = errors.New("benchreport reads /proc: it runs on Linux only")

func childAttr() *syscall.SysProcAttr { return nil }

func readMem(int) (memStatus, error) { return memStatus{}, errLinuxOnly }

func cpuTime(int) (time.Duration, error) { return 0, errLinuxOnly }
