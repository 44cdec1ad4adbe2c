$d0 << EOD
0.0 0.240008
2.0 2.5230360000000003
4.0 4.625327
6.0 6.6905
8.0 8.715556000000001
10.0 10.746955
12.0 12.764298
14.0 14.777784
16.0 16.664904
18.0 18.777241
20.0 20.778637
22.0 22.738001
24.0 24.771554000000002
26.0 26.759148
28.0 28.697259
30.0 30.726564
32.0 32.726072
34.0 34.750809000000004
36.0 36.73964
38.0 38.724188000000005
40.0 40.695243999999995
EOD
$d1 << EOD
0.0 0.000261
2.0 0.00034
4.0 0.00047
6.0 0.000481
8.0 0.000441
10.0 0.00045
12.0 0.000431
14.0 0.000441
16.0 0.000441
18.0 0.000481
20.0 0.000441
22.0 0.000441
24.0 0.00047099999999999996
26.0 0.000361
28.0 0.000371
30.0 0.00040100000000000004
32.0 0.0004
34.0 0.000421
36.0 0.00041
38.0 0.000381
40.0 0.000371
EOD
$d2 << EOD
0.0 0.15207400000000001
0.0 0.052628
EOD
$d3 << EOD
0.0 0.003767
EOD
$d4 << EOD
0.0 0.0046689999999999995
EOD
$d5 << EOD
0.0 0.058
10.0 10.2
20.0 20.3
40.0 40.5
EOD
$d6 << EOD
0.0 0.16
12.0 7.5
24.0 0.2
40.0 0.15
EOD
$d7 << EOD
0.0 0.000767
0.0 0.004
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/1-first-touch.png'
set title "#1 first-touch latency against RTT (p50)"
set xlabel "RTT (ms)"
set ylabel "latency (ms, log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set xrange [-1:42]
plot $d0 using 1:2 with linespoints  title "ferry: post-copy fault (64 KiB chunk)", \
  $d1 using 1:2 with linespoints  title "ferry: already pulled (64 KiB)", \
  $d2 using 1:2 with points pt 5 ps 1.5 title "ferry: post-copy fault, no link emulator (64 / 4 KiB)", \
  $d3 using 1:2 with points pt 7 ps 1.5 title "ferry baseline: memory", \
  $d4 using 1:2 with points pt 9 ps 1.5 title "ferry baseline: mmap'd file, cold", \
  $d5 using 1:2 with linespoints dt 2 pt 4 ps 1.6 lw 1.5 title "thesis: userfaultfd (~58 µs + RTT)", \
  $d6 using 1:2 with linespoints dt 2 pt 8 ps 1.6 lw 1.5 title "thesis: managed mount (P)", \
  $d7 using 1:2 with linespoints dt 2 pt 12 ps 1.6 lw 1.5 title "thesis: memory 767 ns, disk 4.0 µs"
