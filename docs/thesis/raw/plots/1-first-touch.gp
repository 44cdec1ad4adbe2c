$d0 << EOD
0.0 0.276866
2.0 2.4534059999999998
4.0 4.527685
6.0 6.5496170000000005
8.0 8.57798
10.0 10.637251000000001
12.0 12.751655000000001
14.0 14.727360000000001
16.0 16.801268
18.0 18.73794
20.0 20.703487000000003
22.0 22.739664
24.0 24.659947
26.0 26.664405
28.0 28.744115
30.0 30.737382
32.0 32.997288
34.0 34.774192
36.0 36.859512
38.0 38.837711999999996
40.0 40.784993
EOD
$d1 << EOD
0.0 0.000331
2.0 0.000321
4.0 0.000371
6.0 0.00041
8.0 0.00040100000000000004
10.0 0.00038
12.0 0.00040100000000000004
14.0 0.00038
16.0 0.00041099999999999996
18.0 0.000421
20.0 0.000391
22.0 0.000381
24.0 0.000421
26.0 0.00040100000000000004
28.0 0.000391
30.0 0.00039
32.0 0.00039
34.0 0.00041099999999999996
36.0 0.000391
38.0 0.00041
40.0 0.00039
EOD
$d2 << EOD
0.0 0.004647999999999999
EOD
$d3 << EOD
0.0 0.0052
EOD
$d4 << EOD
0.0 0.058
10.0 10.2
20.0 20.3
40.0 40.5
EOD
$d5 << EOD
0.0 0.16
12.0 7.5
24.0 0.2
40.0 0.15
EOD
$d6 << EOD
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
  $d2 using 1:2 with points pt 7 ps 1.5 title "ferry baseline: memory", \
  $d3 using 1:2 with points pt 9 ps 1.5 title "ferry baseline: mmap'd file, cold", \
  $d4 using 1:2 with linespoints dt 2 pt 4 ps 1.6 lw 1.5 title "thesis: userfaultfd (~58 µs + RTT)", \
  $d5 using 1:2 with linespoints dt 2 pt 8 ps 1.6 lw 1.5 title "thesis: managed mount (P)", \
  $d6 using 1:2 with linespoints dt 2 pt 12 ps 1.6 lw 1.5 title "thesis: memory 767 ns, disk 4.0 µs"
