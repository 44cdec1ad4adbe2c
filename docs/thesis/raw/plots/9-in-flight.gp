$d0 << EOD
0.0 235.6609169330617
5.0 21.27228216714406
10.0 11.364807197068735
15.0 7.775435380352895
20.0 5.914948591906377
30.0 3.9389095047008444
EOD
$d1 << EOD
0.0 548.5149754101594
5.0 162.5561131955532
10.0 85.82768592747671
15.0 60.44252111641166
20.0 46.07042172344313
30.0 31.291226389393977
EOD
$d2 << EOD
0.0 341.9553473745649
5.0 445.88997950404007
10.0 343.06382410843287
15.0 280.7774781014406
20.0 248.0885542480957
30.0 190.33645972269653
EOD
$d3 << EOD
0.0 392.36208831239287
5.0 539.4612717212816
10.0 350.55071188195365
15.0 281.8759842123904
20.0 482.19172896979353
30.0 299.01124503269324
EOD
$d4 << EOD
0.0 407.2747595737775
5.0 358.4520070848039
10.0 348.9771825031631
15.0 308.25538357431134
20.0 309.5076429309559
30.0 275.1047553774103
EOD
$d5 << EOD
5.0 1280.0
10.0 1220.0
15.0 1200.0
20.0 1210.0
30.0 1130.0
EOD
$d6 << EOD
5.0 1280.0
30.0 450.0
EOD
$d7 << EOD
5.0 360.0
30.0 70.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/9-in-flight.png'
set title "#9 requests in flight vs RTT (ferry: pipelining; thesis: pull workers)"
set xlabel "RTT (ms)"
set ylabel "MiB/s (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set xrange [-1:32]
plot $d0 using 1:2 with linespoints  title "ferry: 2 conns x 1 x 64 KiB = 0.125 MiB in flight", \
  $d1 using 1:2 with linespoints  title "ferry: 2 conns x 8 x 64 KiB = 1 MiB in flight", \
  $d2 using 1:2 with linespoints  title "ferry: 2 conns x 64 x 64 KiB = 8 MiB in flight", \
  $d3 using 1:2 with linespoints  title "ferry: 2 conns x 256 x 64 KiB = 32 MiB in flight", \
  $d4 using 1:2 with linespoints  title "ferry: 4 conns x 256 x 64 KiB = 64 MiB in flight", \
  $d5 using 1:2 with linespoints dt 2 pt 6 ps 1.6 lw 1.5 title "thesis: 16384 workers", \
  $d6 using 1:2 with linespoints dt 2 pt 8 ps 1.6 lw 1.5 title "thesis: 4092 workers", \
  $d7 using 1:2 with linespoints dt 2 pt 4 ps 1.6 lw 1.5 title "thesis: 512 workers"
