$d0 << EOD
0.0 0.291374
2.0 2.467803
4.0 4.53521
6.0 6.587367
8.0 8.761792999999999
10.0 10.806256
12.0 12.707653
14.0 14.772394
16.0 16.796469000000002
18.0 18.730677
20.0 20.763403999999998
22.0 22.747249
24.0 24.812431
26.0 26.8173
28.0 28.766537
30.0 30.812483
32.0 32.821951
34.0 34.834754999999994
36.0 36.858961
38.0 38.906819999999996
40.0 40.929714
EOD
$d1 << EOD
0.0 0.000371
2.0 0.000441
4.0 0.000441
6.0 0.00037
8.0 0.00040100000000000004
10.0 0.000371
12.0 0.00041
14.0 0.00041099999999999996
16.0 0.00041099999999999996
18.0 0.00046100000000000004
20.0 0.000441
22.0 0.000421
24.0 0.00040100000000000004
26.0 0.00040100000000000004
28.0 0.00041099999999999996
30.0 0.000451
32.0 0.000421
34.0 0.000431
36.0 0.00040100000000000004
38.0 0.00047099999999999996
40.0 0.00040100000000000004
EOD
$d2 << EOD
0.0 0.18335200000000001
0.0 0.08278400000000001
EOD
$d3 << EOD
0.0 0.006472
EOD
$d4 << EOD
0.0 0.007795
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
